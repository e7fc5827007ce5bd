#include "kernels/cpu/precision.h"

#include <cstring>

#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {

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
MOERUN_SIMD_CLONES void ToBf16Bits(const float* in, uint16_t* out, int64_t n) {
  ScopedOp profile_op(Op::kCastBf16);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    out[i] = static_cast<uint16_t>(nan ? (bits >> 16) | 0x0040u : rounded);
  }
}

}  // namespace moerun::kernels::cpu
