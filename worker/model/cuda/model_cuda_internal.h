// Internal to ModelCuda (worker/model/cuda/model_cuda.h): one decoder layer's activations
// and bound weights, and the helpers its two source files share (model_cuda.cc: creation,
// forward and backward; model_cuda_step.cc: the optimizer step and the model's state as the
// host sees it).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "kernels/cuda/cuda_status.h"
#include "worker/model/cuda/model_cuda.h"

namespace moerun::model::cuda {
namespace model_cuda_internal {

// kernels/cuda/cuda_status.h decides each error's code.
inline Status Cuda(cudaError_t e, const std::string& what) {
  return kernels::cuda::CudaStatus(e, "model on the GPU: " + what);
}

inline Status Blas(cublasStatus_t s, const std::string& what) {
  return kernels::cuda::CublasStatus(s, "model on the GPU: " + what);
}

// A copy ordered with the model's stream (whatever its flags), finished on return.
inline cudaError_t CopyOn(cudaStream_t stream, void* dst, const void* src, size_t bytes,
                          cudaMemcpyKind kind) {
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream);
  return e != cudaSuccess ? e : cudaStreamSynchronize(stream);
}

// `rows` rows of `cols` values between device buffers whose rows are `dst_stride` and
// `src_stride` values apart, on the stream (the latent's columns out of kv_a_proj's output,
// MTP's halves of [enorm; hnorm], the first positions of each sequence).
template <typename T>
cudaError_t Copy2D(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t cols,
                   int64_t rows, cudaStream_t stream) {
  return cudaMemcpy2DAsync(dst, size_t(dst_stride) * sizeof(T), src, size_t(src_stride) * sizeof(T),
                           size_t(cols) * sizeof(T), size_t(rows), cudaMemcpyDeviceToDevice,
                           stream);
}

inline std::string LayerName(int64_t layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

}  // namespace model_cuda_internal

// Device memory for `count` values of V, freed with the model; null (and the model marked out
// of memory) when cudaMalloc fails. Here, so every source file of the model can use it.
template <typename T>
template <typename V>
V* ModelCuda<T>::Alloc(int64_t count) {
  void* p = nullptr;
  if (cudaMalloc(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(V)) != cudaSuccess) {
    out_of_memory_ = true;
    return nullptr;
  }
  owned_.push_back(p);
  return static_cast<V*>(p);
}

// One decoder layer's activations for the fixed batch (what its backward reads).
template <typename T>
struct ModelCuda<T>::Layer {
  T *n1 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr, *mid = nullptr,
    *n2 = nullptr;
  float *rstd1 = nullptr, *rstd2 = nullptr, *probs = nullptr;
  T *g = nullptr, *u = nullptr, *a = nullptr;  // dense MLP [N, F]
  // MLA (model_cuda_mla.cc): q holds [N, H, dn + dr], att [N, H, dv], k and v stay unused.
  T *qa = nullptr, *qa_norm = nullptr;    // q_a_proj's output before and after its norm [N, qr]
  T *ckv = nullptr, *ckv_norm = nullptr;  // the latent before and after its norm [N, kr]
  T *kpe = nullptr, *kv = nullptr;        // shared RoPE key [N, dr]; kv_b_proj's output
  float *qa_rstd = nullptr, *ckv_rstd = nullptr;
  std::unique_ptr<MoeLayerCuda<T>> moe;                      // MoE layers
  std::unordered_map<std::string, Fp8Linear::Weight> fp8_w;  // fp8: quantized each Forward
  MoeLayerWeightsCuda<T> moe_w;  // its weights and gradients, bound once
  MoeLayerGradsCuda moe_g;
};

// One multi-token prediction module k on the head stage (model_cuda_mtp.cc): batch sequences
// of seq − k positions (Nk rows), the CPU's MtpActivations (worker/model/stage_activations.h).
template <typename T>
struct ModelCuda<T>::MtpModule {
  int64_t k = 0;
  std::vector<int32_t> host_ids, host_targets;     // [Nk]: token i + k, token i + k + 1
  int32_t *ids = nullptr, *targets = nullptr;      // the same on the device
  T *emb = nullptr, *en = nullptr;                 // embedding rows [Nk, D], after enorm
  T *h = nullptr, *hn = nullptr;                   // the previous depth's rows, after hnorm
  T *cat = nullptr, *x = nullptr, *out = nullptr;  // [Nk, 2D] eh_proj's input; block in, out
  T *fnorm = nullptr, *logits = nullptr;           // shared_head.norm output; [Nk, V]
  float *en_rstd = nullptr, *hn_rstd = nullptr, *frstd = nullptr, *row_loss = nullptr;
  double* loss = nullptr;  // device: the module's mean cross-entropy
};

}  // namespace moerun::model::cuda
