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

inline std::string LayerName(int64_t layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

}  // namespace model_cuda_internal

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

}  // namespace moerun::model::cuda
