// Math written so the compiler vectorizes the loops that call it, for the fp32 element-wise
// kernels (SwiGLU, softmax, cross-entropy, router scores). glibc's expf is a call per element
// that no loop vectorizes without -ffast-math, which would also license reordering sums.
//
// ExpF: e^x for float x, branch-free: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2),
// e^r by its degree-7 Taylor polynomial (Horner), times 2^n through the exponent bits. Relative
// error below 1.5e-7 (about 1 ulp) across [-87.3, 88.3] (tests/unit/test_vector_math.cc); x
// above 88.3 gives +inf (std::exp: above 88.72), below -87.3 gives 0 (std::exp would give
// subnormals there), NaN stays NaN. Pure; the same bits on every call for a given instruction set
// (FMA contraction may differ between the clones picked at load time).
#pragma once

#include <cstdint>
#include <cstring>

// One clone per instruction set, picked at load time: AVX-512, AVX2 or baseline x86-64.
#define MOERUN_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))

namespace moerun::kernels::cpu {

inline float ExpF(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln2 = kLn2Hi + kLn2Lo; kLn2Hi has 9 bits
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kMax = 88.3f, kMin = -87.3f;              // 2^n stays a normal float
  const float c = x > kMax ? kMax : (x < kMin ? kMin : x);  // NaN falls through as NaN
  // Round c·log2(e) to nearest: adding 1.5·2^23 leaves the integer in the low mantissa bits.
  const float shifted = c * kLog2e + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (c - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t sb;
  std::memcpy(&sb, &shifted, sizeof sb);
  const uint32_t bits = (sb - 0x4b400000u + 127u) << 23;  // 2^n, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float out = p * scale;
  out = x > kMax ? __builtin_inff() : out;
  out = x < kMin ? 0.0f : out;
  return x != x ? x : out;
}

// Row reductions for the fp32 kernels, vectorized: sums in double over 8 interleaved lanes
// added in a fixed order, so every run, and every instruction set's clone, gives the same bits.
float MaxF(const float* x, int64_t n);     // n ≥ 1; as std::max folded from x[0]: NaN only there
double SumF64(const float* x, int64_t n);  // Σ x
double DotF64(const float* a, const float* b, int64_t n);                   // Σ a·b
double Dot3F64(const float* a, const float* b, const float* c, int64_t n);  // Σ a·b·c

}  // namespace moerun::kernels::cpu
