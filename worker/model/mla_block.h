// Multi-head latent attention (DeepSeek-V2/V3; docs/architecture.md §4), the attention half of
// a decoder layer with `attention: mla`, forward and backward on the CPU kernels. Internal
// to ModelStage. From the normed input x [N, D] (N = B·S):
//   queries  q = q_b_proj(RMSNorm(q_a_proj(x)))            [N, H, dn + dr]
//            (q_lora_rank 0: q = q_proj(x))
//   latent   [c, k_pe] = kv_a_proj_with_mqa(x)               [N, kr + dr]
//            [k_nope, v] = kv_b_proj(RMSNorm(c))             [N, H, dn + dv]
//   RoPE (interleaved, kernels/cpu/elementwise.h) on q's last dr values per head and on k_pe,
//   the one key head every head shares;
//   y = o_proj(softmax(scale · (q_nope·k_nope + q_pe·k_pe), causal) · v), scale 1/sqrt(dn + dr).
// Names and shapes are Hugging Face DeepSeek-V3's (common/model_tensors.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/mla_attention.h"
#include "worker/model/linear.h"

namespace moerun::model {

struct MlaShape {
  int64_t d_model = 0, heads = 0;
  int64_t q_lora_rank = 0;  // 0: one q_proj
  int64_t kv_lora_rank = 0;
  int64_t nope = 0, rope = 0, v = 0;  // per head: qk_nope_head_dim, qk_rope_head_dim, v_head_dim
  double rope_theta = 10000.0;
  GemmPrecision precision = GemmPrecision::kFp32;  // of every projection

  kernels::cpu::MlaDims dims() const { return {heads, nope, rope, v}; }
  double scale() const;  // 1 / sqrt(nope + rope)
  // Per-token widths: q [H·(dn + dr)], kv_b_proj's output [H·(dn + dv)], the attention output
  // [H·dv], kv_a_proj's output (the latent and the shared RoPE key) [kr + dr].
  int64_t q_width() const { return heads * (nope + rope); }
  int64_t kv_width() const { return heads * (nope + v); }
  int64_t out_width() const { return heads * v; }
  int64_t latent_width() const { return kv_lora_rank + rope; }
};

// Weights [out, in] and their gradients (+=). With q_lora_rank 0, q_a, q_a_norm and q_b are
// null and q is set; otherwise the reverse.
template <typename T>
struct MlaWeights {
  const T *q_a = nullptr, *q_a_norm = nullptr, *q_b = nullptr, *q = nullptr;
  const T *kv_a = nullptr, *kv_a_norm = nullptr, *kv_b = nullptr, *o = nullptr;
  T *dq_a = nullptr, *dq_a_norm = nullptr, *dq_b = nullptr, *dq = nullptr;
  T *dkv_a = nullptr, *dkv_a_norm = nullptr, *dkv_b = nullptr, *d_o = nullptr;
};

// What backward reads, and scratch reused across micro-batches.
template <typename T>
struct MlaActivations {
  std::vector<T> qa, qa_norm, qa_rstd;     // [N, qr] before and after its RMSNorm; [N]
  std::vector<T> q;                        // [N, H, dn + dr], RoPE part turned
  std::vector<T> ckv, ckv_norm, ckv_rstd;  // latent [N, kr] before and after RMSNorm; [N]
  std::vector<T> kpe;                      // [N, dr], turned
  std::vector<T> kv;                       // [N, H, dn + dv]
  std::vector<T> probs;  // [B, H, S, S]; above each row block's diagonal: stale, never read
  std::vector<T> att;    // [N, H, dv], o_proj's input
  // Scratch: kv_a_proj's output (forward) and its gradient (backward), the gradients of o_proj's
  // input, q, kv, k_pe, of a normed input and of a norm's input.
  std::vector<T> kva, datt, dq, dkv, dkpe, dnormed, dnorm_in;
};

// y (= or += with accumulate_y) = MLA(x), x [N, D] already normed.
template <typename T>
void MlaForward(const T* x, int64_t b, int64_t s, const MlaShape& shape, const MlaWeights<T>& w,
                MlaActivations<T>& act, T* y, bool accumulate_y);

// dx (= or += with accumulate_dx) from dy [N, D]; weight gradients (+=).
template <typename T>
void MlaBackward(const T* dy, const T* x, int64_t b, int64_t s, const MlaShape& shape,
                 const MlaWeights<T>& w, MlaActivations<T>& act, T* dx, bool accumulate_dx);

}  // namespace moerun::model
