#include "kernels/cpu/causal_softmax.h"

#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {
namespace {

MOERUN_SIMD_CLONES void ExpShifted(float* __restrict row, float mx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) row[j] = ExpF(row[j] - mx);
}

MOERUN_SIMD_CLONES void Scale(float* __restrict row, float s, int64_t n) {
  for (int64_t j = 0; j < n; ++j) row[j] *= s;
}

MOERUN_SIMD_CLONES void SoftmaxGrad(const float* __restrict p, float* __restrict ds, float dot,
                                    int64_t n) {
  for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - dot);
}

}  // namespace

void CausalSoftmaxRowF32(float* row, int64_t i, int64_t cols) {
  const float mx = MaxF(row, i + 1);
  ExpShifted(row, mx, i + 1);
  Scale(row, float(1.0 / SumF64(row, i + 1)), i + 1);
  std::fill(row + i + 1, row + cols, 0.0f);
}

void CausalSoftmaxBackwardRowF32(const float* p, float* ds, int64_t i, int64_t cols) {
  SoftmaxGrad(p, ds, float(DotF64(p, ds, i + 1)), i + 1);
  std::fill(ds + i + 1, ds + cols, 0.0f);
}

}  // namespace moerun::kernels::cpu
