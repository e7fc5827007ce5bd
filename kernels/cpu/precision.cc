#include "kernels/cpu/precision.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace moerun::kernels::cpu {
namespace {

constexpr int kE4M3MantissaBits = 3;

float ScaleFor(float amax) { return amax > 0.0f ? amax / kE4M3Max : 1.0f; }

}  // namespace

float RoundToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) {  // inf or NaN: keep, force a quiet NaN bit
    if (bits & 0x007fffffu) bits |= 0x00400000u;
    bits &= 0xffff0000u;
  } else {
    const uint32_t lsb = (bits >> 16) & 1u;
    bits += 0x7fffu + lsb;  // round to nearest, ties to even
    bits &= 0xffff0000u;
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

void RoundToBf16(const float* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = RoundToBf16(in[i]);
}

// Branch-free so the compiler vectorizes it (one clone per instruction set, picked at load
// time): the same bits as RoundToBf16's upper half, NaNs quiet.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void ToBf16Bits(const float* in,
                                                                                    uint16_t* out,
                                                                                    int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    out[i] = static_cast<uint16_t>(nan ? (bits >> 16) | 0x0040u : rounded);
  }
}

float RoundToE4M3(float x) {
  if (std::isnan(x)) return x;
  const float a = std::fabs(x);
  if (a >= kE4M3Max) return std::copysign(kE4M3Max, x);
  float r;
  if (a < 0x1p-6f) {
    // Subnormal range: multiples of 2^-9; the scaled value is exact in fp32.
    r = std::nearbyint(a * 512.0f) * (1.0f / 512.0f);  // default rounding: ties to even
  } else {
    // Normal range: keep 3 of fp32's 23 mantissa bits, round to nearest even on the bits
    // (a carry into the exponent is the correct result).
    uint32_t bits;
    std::memcpy(&bits, &a, sizeof bits);
    constexpr int kDrop = 23 - kE4M3MantissaBits;
    bits += ((1u << (kDrop - 1)) - 1u) + ((bits >> kDrop) & 1u);
    bits &= ~((1u << kDrop) - 1u);
    std::memcpy(&r, &bits, sizeof r);
  }
  return std::copysign(std::min(r, kE4M3Max), x);
}

void FakeQuantE4M3Tiles1x128(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols) {
  const int64_t tiles = (cols + kFp8TileCols - 1) / kFp8TileCols;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t c0 = t * kFp8TileCols, c1 = std::min(cols, c0 + kFp8TileCols);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(in[r * cols + c]));
      const float s = ScaleFor(amax);
      scales[r * tiles + t] = s;
      for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = RoundToE4M3(in[r * cols + c] / s) * s;
    }
  }
}

void FakeQuantE4M3Tiles128x1(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols) {
  const int64_t bands = (rows + kFp8TileCols - 1) / kFp8TileCols;
  std::vector<float> amax(static_cast<size_t>(cols));
  for (int64_t b = 0; b < bands; ++b) {
    const int64_t r0 = b * kFp8TileCols, r1 = std::min(rows, r0 + kFp8TileCols);
    std::fill(amax.begin(), amax.end(), 0.0f);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) amax[c] = std::max(amax[c], std::fabs(in[r * cols + c]));
    for (int64_t c = 0; c < cols; ++c) scales[b * cols + c] = ScaleFor(amax[c]);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float s = scales[b * cols + c];
        out[r * cols + c] = RoundToE4M3(in[r * cols + c] / s) * s;
      }
    }
  }
}

void FakeQuantE4M3Blocks128x128(const float* in, float* out, float* scales, int64_t rows,
                                int64_t cols) {
  const int64_t br = (rows + kFp8TileCols - 1) / kFp8TileCols;
  const int64_t bc = (cols + kFp8TileCols - 1) / kFp8TileCols;
  for (int64_t i = 0; i < br; ++i) {
    for (int64_t j = 0; j < bc; ++j) {
      const int64_t r0 = i * kFp8TileCols, r1 = std::min(rows, r0 + kFp8TileCols);
      const int64_t c0 = j * kFp8TileCols, c1 = std::min(cols, c0 + kFp8TileCols);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(in[r * cols + c]));
      const float s = ScaleFor(amax);
      scales[i * bc + j] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = RoundToE4M3(in[r * cols + c] / s) * s;
    }
  }
}

}  // namespace moerun::kernels::cpu
