// CUDA twin of kernels/cpu/attention.h: exact causal multi-head attention, forward and
// backward, with the probabilities saved for backward as on the CPU. Layouts as there:
//   q, k [B, T, H, dk];  v, out [B, T, H, dv];  probs, dscores [B, H, T, T] (fp32).
// T is float or __nv_bfloat16 storage; the math is fp32. One block per query row (forward,
// dq) or key row (dk, dv); every sum runs over positions in order, so results are
// deterministic. This is the reference-speed kernel the tests compare against the CPU;
// it materializes T×T probabilities, so long sequences want a fused (flash) kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

template <typename T>
cudaError_t LaunchAttentionForward(const T* q, const T* k, const T* v, T* out, float* probs,
                                   int64_t b, int64_t t, int64_t h, int64_t dk, int64_t dv,
                                   double scale, cudaStream_t stream);

// dq, dk, dv (=). dscores: device scratch [B, H, T, T] floats.
template <typename T>
cudaError_t LaunchAttentionBackward(const T* dout, const T* q, const T* k, const T* v,
                                    const float* probs, float* dscores, T* dq, T* dk_out, T* dv_out,
                                    int64_t b, int64_t t, int64_t h, int64_t dk, int64_t dv,
                                    double scale, cudaStream_t stream);

}  // namespace moerun::kernels::cuda
