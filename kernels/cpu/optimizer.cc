#include "kernels/cpu/optimizer.h"

#include <cmath>

#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {

MOERUN_SIMD_CLONES void AdamWUpdate(float* __restrict p, const float* __restrict g,
                                    float* __restrict m, float* __restrict v, int64_t n,
                                    const AdamWStep& s, bool decay) {
  ScopedOp profile_op(Op::kOptimizer);
  const float b1 = float(s.beta1), b2 = float(s.beta2);
  const float c1 = float(1.0 / (1.0 - std::pow(s.beta1, double(s.step))));
  const float c2 = float(1.0 / (1.0 - std::pow(s.beta2, double(s.step))));
  const float lr = float(s.lr), eps = float(s.eps), wd = decay ? float(s.weight_decay) : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float mhat = m[i] * c1, vhat = v[i] * c2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
  }
}

double SumOfSquares(const float* g, int64_t n) {
  ScopedOp profile_op(Op::kOptimizer);
  return DotF64(g, g, n);
}

double ClipFactor(double norm, double max_norm) {
  if (max_norm <= 0 || norm <= max_norm) return 1.0;
  return max_norm / (norm + 1e-6);
}

MOERUN_SIMD_CLONES void ScaleInPlace(float* g, int64_t n, float factor) {
  ScopedOp profile_op(Op::kOptimizer);
  for (int64_t i = 0; i < n; ++i) g[i] *= factor;
}

}  // namespace moerun::kernels::cpu
