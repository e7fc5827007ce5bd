// The attention core of multi-head latent attention (DeepSeek-V2/V3) on the CPU: causal
// softmax attention whose keys are a per-head part from the latent (k_nope) plus one RoPE key
// head every head shares (k_pe). It reads the projections where they were written, so keys
// and values are never assembled per head. Layouts (row-major, one row per token, N = B·T):
//   q     [N, H, dn + dr]  per head: the part without RoPE, then the RoPE part (already turned)
//   kv    [N, H, dn + dv]  kv_b_proj's output, per head: the key part without RoPE, the value
//   kpe   [N, dr]          the shared RoPE key (already turned)
//   out   [N, H, dv]
//   probs [B, H, T, T]     softmax rows for backward; entries above the diagonal are not read
// score_ij = scale · (q_nope_i · k_nope_j + q_pe_i · k_pe_j) for j ≤ i, softmax over j.
// Work runs in blocks of query rows, each against the keys up to its last row, so the
// products skip (most of) the masked upper triangle. Every sum runs in a fixed order:
// results are deterministic. Instantiated for float and double (gradient tests).
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

struct MlaDims {
  int64_t heads = 0, nope = 0, rope = 0, v = 0;  // H, dn, dr, dv
};

template <typename T>
void MlaAttentionForward(const T* q, const T* kv, const T* kpe, T* out, T* probs, int64_t b,
                         int64_t t, const MlaDims& dims, double scale);

// dq [N, H, dn + dr] (=), dkv [N, H, dn + dv] (=), dkpe [N, dr] (=, summed over heads).
template <typename T>
void MlaAttentionBackward(const T* dout, const T* q, const T* kv, const T* kpe, const T* probs,
                          T* dq, T* dkv, T* dkpe, int64_t b, int64_t t, const MlaDims& dims,
                          double scale);

}  // namespace moerun::kernels::cpu
