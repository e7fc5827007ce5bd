// CUDA twins of kernels/cpu/elementwise.h: embedding, RMSNorm, RoPE, SwiGLU, cross-entropy,
// forward and backward. T is the activation storage type, float or __nv_bfloat16; every
// kernel computes in fp32. Parameter gradients (dtable, dw) are fp32 and accumulated (+=),
// as on the CPU. Launchers take device pointers, plain sizes and an explicit stream, enqueue
// the work and return the launch status without synchronizing.
// Determinism: no output is formed with atomics; every reduction runs in a fixed order, so
// the same inputs give the same bits (sums differ from the CPU's double-precision order in
// the last bits: tests/gpu bounds the relative error per precision).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

// out[n] = table[ids[n]]: table [V, D], ids [N], out [N, D].
template <typename T>
cudaError_t LaunchEmbeddingForward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d,
                                   cudaStream_t stream);
// dtable[ids[n]] += dout[n], tokens in order (one thread per column walks the tokens).
template <typename T>
cudaError_t LaunchEmbeddingBackward(const T* dout, const int32_t* ids, float* dtable, int64_t n,
                                    int64_t d, cudaStream_t stream);

// y = x · rstd · w, rstd [N] = 1 / sqrt(mean(x²) + 1e-6) (saved for backward).
template <typename T>
cudaError_t LaunchRmsNormForward(const T* x, const T* w, T* y, float* rstd, int64_t n, int64_t d,
                                 cudaStream_t stream);
// dx (=) per row; dw (+=) per column, rows in order.
template <typename T>
cudaError_t LaunchRmsNormBackward(const T* dy, const T* x, const T* w, const float* rstd, T* dx,
                                  float* dw, int64_t n, int64_t d, cudaStream_t stream);

// Rotate-half RoPE in place on x [B, T, H, hd]; `inverse` is the backward pass.
template <typename T>
cudaError_t LaunchRope(T* x, int64_t b, int64_t t, int64_t h, int64_t hd, double theta,
                       bool inverse, cudaStream_t stream);

// Interleaved RoPE (DeepSeek's convention, MLA's RoPE parts) in place on the `dim` values at
// x + r·row_stride + j·head_stride for rows r < b·t (pos = r mod t) and heads j < h: pair
// (2i, 2i+1) turns by pos · theta^(-2i/dim); `inverse` is the backward pass.
template <typename T>
cudaError_t LaunchRopeInterleaved(T* x, int64_t b, int64_t t, int64_t h, int64_t row_stride,
                                  int64_t head_stride, int64_t dim, double theta, bool inverse,
                                  cudaStream_t stream);

// out = silu(gate) · up; backward writes dgate, dup (=). All [count].
template <typename T>
cudaError_t LaunchSwiGluForward(const T* gate, const T* up, T* out, int64_t count,
                                cudaStream_t stream);
template <typename T>
cudaError_t LaunchSwiGluBackward(const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                                 int64_t count, cudaStream_t stream);

// Mean cross-entropy of logits [N, V] against targets [N] into *loss (device, one double).
// dlogits (=, may be null) is d(loss)/d(logits) · dloss. row_loss: device scratch [N] floats.
template <typename T>
cudaError_t LaunchCrossEntropy(const T* logits, const int32_t* targets, T* dlogits, float* row_loss,
                               double* loss, int64_t n, int64_t v, double dloss,
                               cudaStream_t stream);

// y[i] += x[i] (residual connections).
template <typename T>
cudaError_t LaunchAddInPlace(T* y, const T* x, int64_t count, cudaStream_t stream);

// out[i] = in[i] converted (fp32 -> storage precision), e.g. the router's fp32 gradient
// before the GEMM that takes it back to the activations.
template <typename T>
cudaError_t LaunchCastFromFloat(const float* in, T* out, int64_t count, cudaStream_t stream);

}  // namespace moerun::kernels::cuda
