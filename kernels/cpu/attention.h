// Causal multi-head attention on the CPU, score and value products through BLAS.
// Layouts (row-major):
//   q, k  [B, T, H, dk]   (dk = qk head dim; RoPE already applied)
//   v     [B, T, H, dv]
//   out   [B, T, H, dv]
//   probs [B, H, T, T]    softmax rows saved for backward; entries above the diagonal are 0
// scale multiplies q·k (1/sqrt(dk) for standard attention). Instantiated for float, double.
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t b, int64_t t,
                      int64_t h, int64_t dk, int64_t dv, double scale);

// dq, dk, dv (=). Needs T*T scratch per call (allocated inside).
template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                       T* dk_out, T* dv_out, int64_t b, int64_t t, int64_t h, int64_t dk,
                       int64_t dv, double scale);

}  // namespace moerun::kernels::cpu
