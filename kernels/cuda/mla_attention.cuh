// CUDA twin of kernels/cpu/mla_attention.h: the attention core of multi-head latent attention,
// forward and backward, with the probabilities saved for backward. Layouts as there:
//   q     [B, T, H, dn + dr]  (RoPE part turned)     kv   [B, T, H, dn + dv]  (k_nope, value)
//   kpe   [B, T, dr]          (the shared RoPE key)  out  [B, T, H, dv]
//   probs, dscores [B, H, T, T] (fp32; entries above the diagonal are zero)
// score_ij = scale · (q_nope_i · k_nope_j + q_pe_i · k_pe_j), j ≤ i. T is float or
// __nv_bfloat16 storage; the math is fp32. One block per query row (forward, dq), per key row
// and head (dk_nope, dv), per key row (dk_pe, summed over the heads in order): every sum runs
// in a fixed order and no output is formed with atomics, so results are deterministic. Like
// kernels/cuda/attention.cuh, this is the reference-speed kernel the tests compare with the
// CPU; long sequences want a fused (flash) kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

struct MlaDimsCuda {
  int64_t heads = 0, nope = 0, rope = 0, v = 0;  // H, dn, dr, dv
};

template <typename T>
cudaError_t LaunchMlaAttentionForward(const T* q, const T* kv, const T* kpe, T* out, float* probs,
                                      int64_t b, int64_t t, MlaDimsCuda dims, double scale,
                                      cudaStream_t stream);

// dq [B, T, H, dn + dr], dkv [B, T, H, dn + dv] and dkpe [B, T, dr] (all =); dscores: device
// scratch [B, H, T, T] floats.
template <typename T>
cudaError_t LaunchMlaAttentionBackward(const T* dout, const T* q, const T* kv, const T* kpe,
                                       const float* probs, float* dscores, T* dq, T* dkv, T* dkpe,
                                       int64_t b, int64_t t, MlaDimsCuda dims, double scale,
                                       cudaStream_t stream);

}  // namespace moerun::kernels::cuda
