// fp8 E4M3 rounding and DeepSeek-V3's tile and block quantizers (kernels/cpu/precision.h).
// Every loop here is branch-free so the compiler vectorizes it (one clone per instruction set,
// picked at load time); the values are those of the scalar definition for every input,
// NaN and infinities included (tests/unit/test_precision.cc sweeps the float range).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/precision.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {
namespace {

constexpr uint32_t kAbsMask = 0x7fffffffu, kInfBits = 0x7f800000u, kSignBit = 0x80000000u;
constexpr int kDrop = 23 - 3;  // fp32 mantissa bits E4M3 does not keep

inline uint32_t Bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

inline float FromBits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// RoundToE4M3 without branches.
inline float E4M3(float x) {
  const uint32_t xb = Bits(x), ab = xb & kAbsMask;
  const float a = FromBits(ab);
  // Normal range: keep 3 mantissa bits, round to nearest even on the bits (a carry into the
  // exponent is the correct result).
  const float normal =
      FromBits((ab + ((1u << (kDrop - 1)) - 1u) + ((ab >> kDrop) & 1u)) & ~((1u << kDrop) - 1u));
  // Subnormal range (below 2^-6): multiples of 2^-9. Adding 2^14, whose ulp is 2^-9, rounds
  // there to nearest even; taking it away again is exact.
  const float sub = (a + 0x1p14f) - 0x1p14f;
  float r = a < 0x1p-6f ? sub : normal;
  r = r < kE4M3Max ? r : kE4M3Max;  // saturate, infinities too
  const uint32_t out = Bits(r) | (xb & kSignBit);
  return FromBits(ab > kInfBits ? xb : out);  // NaN stays itself
}

// amax of |x| over n values, NaNs left out; as bits (non-negative floats order as their bits).
MOERUN_SIMD_CLONES uint32_t AbsMaxBits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t ab = Bits(x[i]) & kAbsMask;
    const uint32_t v = ab & (0u - uint32_t(ab <= kInfBits));  // NaN: 0
    m = m > v ? m : v;
  }
  return m;
}

// amax[c] = max(amax[c], |row[c]|), NaNs left out.
MOERUN_SIMD_CLONES void AbsMaxBitsCols(const float* row, uint32_t* amax, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t ab = Bits(row[i]) & kAbsMask;
    amax[i] = std::max(amax[i], ab > kInfBits ? 0u : ab);
  }
}

float ScaleFor(uint32_t amax_bits) {
  const float amax = FromBits(amax_bits);
  return amax > 0.0f ? amax / kE4M3Max : 1.0f;
}

// n values quantized with one scale: E4M3 values as bf16 bits (q) and/or dequantized (deq).
MOERUN_SIMD_CLONES void QuantRun(const float* in, float s, uint16_t* q, float* deq, int64_t n) {
  if (q != nullptr) {
    for (int64_t i = 0; i < n; ++i) q[i] = static_cast<uint16_t>(Bits(E4M3(in[i] / s)) >> 16);
  }
  if (deq != nullptr) {
    for (int64_t i = 0; i < n; ++i) deq[i] = E4M3(in[i] / s) * s;
  }
}

// The same with one scale per value (a row of 128x1 tiles).
MOERUN_SIMD_CLONES void QuantRunScales(const float* in, const float* s, uint16_t* q, float* deq,
                                       int64_t n) {
  if (q != nullptr) {
    for (int64_t i = 0; i < n; ++i) q[i] = static_cast<uint16_t>(Bits(E4M3(in[i] / s[i])) >> 16);
  }
  if (deq != nullptr) {
    for (int64_t i = 0; i < n; ++i) deq[i] = E4M3(in[i] / s[i]) * s[i];
  }
}

void Tiles1x128(const float* in, uint16_t* q, float* deq, float* scales, int64_t rows,
                int64_t cols) {
  ScopedOp profile_op(Op::kQuantE4M3);
  const int64_t tiles = (cols + kFp8TileCols - 1) / kFp8TileCols;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kFp8TileCols, len = std::min(cols - c0, kFp8TileCols);
      const int64_t o = r * cols + c0;
      const float s = ScaleFor(AbsMaxBits(in + o, len));
      scales[r * tiles + t] = s;
      QuantRun(in + o, s, q == nullptr ? nullptr : q + o, deq == nullptr ? nullptr : deq + o, len);
    }
  }
}

void Tiles128x1(const float* in, uint16_t* q, float* deq, float* scales, int64_t rows,
                int64_t cols) {
  ScopedOp profile_op(Op::kQuantE4M3);
  const int64_t bands = (rows + kFp8TileCols - 1) / kFp8TileCols;
  std::vector<uint32_t> amax(static_cast<size_t>(cols));
  for (int64_t b = 0; b < bands; ++b) {
    const int64_t r0 = b * kFp8TileCols, r1 = std::min(rows, r0 + kFp8TileCols);
    std::fill(amax.begin(), amax.end(), 0u);
    for (int64_t r = r0; r < r1; ++r) AbsMaxBitsCols(in + r * cols, amax.data(), cols);
    float* s = scales + b * cols;
    for (int64_t c = 0; c < cols; ++c) s[c] = ScaleFor(amax[size_t(c)]);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t o = r * cols;
      QuantRunScales(in + o, s, q == nullptr ? nullptr : q + o, deq == nullptr ? nullptr : deq + o,
                     cols);
    }
  }
}

void Blocks128x128(const float* in, uint16_t* q, float* deq, float* scales, int64_t rows,
                   int64_t cols) {
  ScopedOp profile_op(Op::kQuantE4M3);
  const int64_t br = (rows + kFp8TileCols - 1) / kFp8TileCols;
  const int64_t bc = (cols + kFp8TileCols - 1) / kFp8TileCols;
  for (int64_t i = 0; i < br; ++i) {
    const int64_t r0 = i * kFp8TileCols, r1 = std::min(rows, r0 + kFp8TileCols);
    for (int64_t j = 0; j < bc; ++j) {
      const int64_t c0 = j * kFp8TileCols, len = std::min(cols - c0, kFp8TileCols);
      uint32_t amax = 0;
      for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, AbsMaxBits(in + r * cols + c0, len));
      const float s = ScaleFor(amax);
      scales[i * bc + j] = s;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t o = r * cols + c0;
        QuantRun(in + o, s, q == nullptr ? nullptr : q + o, deq == nullptr ? nullptr : deq + o,
                 len);
      }
    }
  }
}

}  // namespace

float RoundToE4M3(float x) { return E4M3(x); }

void FakeQuantE4M3Tiles1x128(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols) {
  Tiles1x128(in, nullptr, out, scales, rows, cols);
}

void FakeQuantE4M3Tiles128x1(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols) {
  Tiles128x1(in, nullptr, out, scales, rows, cols);
}

void FakeQuantE4M3Blocks128x128(const float* in, float* out, float* scales, int64_t rows,
                                int64_t cols) {
  Blocks128x128(in, nullptr, out, scales, rows, cols);
}

void QuantE4M3Tiles1x128(const float* in, uint16_t* q, float* scales, int64_t rows, int64_t cols) {
  Tiles1x128(in, q, nullptr, scales, rows, cols);
}

void QuantE4M3Tiles128x1(const float* in, uint16_t* q, float* scales, int64_t rows, int64_t cols) {
  Tiles128x1(in, q, nullptr, scales, rows, cols);
}

void QuantE4M3Blocks128x128(const float* in, uint16_t* q, float* scales, int64_t rows,
                            int64_t cols) {
  Blocks128x128(in, q, nullptr, scales, rows, cols);
}

}  // namespace moerun::kernels::cpu
