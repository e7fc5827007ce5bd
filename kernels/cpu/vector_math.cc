#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {
namespace {

constexpr int kLanes = 8;

inline double Combine(const double* lane) {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

MOERUN_SIMD_CLONES float MaxF(const float* x, int64_t n) {
  float lane[16];
  for (int l = 0; l < 16; ++l) lane[l] = x[0];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  float m = lane[0];
  for (int l = 1; l < 16; ++l) m = lane[l] > m ? lane[l] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

MOERUN_SIMD_CLONES double SumF64(const float* x, int64_t n) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += double(x[i + l]);
  for (; i < n; ++i) lane[0] += double(x[i]);
  return Combine(lane);
}

MOERUN_SIMD_CLONES double DotF64(const float* a, const float* b, int64_t n) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += double(a[i + l]) * double(b[i + l]);
  for (; i < n; ++i) lane[0] += double(a[i]) * double(b[i]);
  return Combine(lane);
}

MOERUN_SIMD_CLONES double Dot3F64(const float* a, const float* b, const float* c, int64_t n) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l)
      lane[l] += double(a[i + l]) * double(b[i + l]) * double(c[i + l]);
  for (; i < n; ++i) lane[0] += double(a[i]) * double(b[i]) * double(c[i]);
  return Combine(lane);
}

}  // namespace moerun::kernels::cpu
