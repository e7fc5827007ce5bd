// GEMMs on the GPU through cuBLAS: the twins of kernels/cpu/gemm.h, and the expert GEMMs of
// an MoE layer as one grouped call (cublasGemmGroupedBatchedEx) instead of one launch per
// expert. Row-major throughout, like the CPU twins. T is float or __nv_bfloat16 storage; the
// math is fp32 (CUBLAS_COMPUTE_32F); weight gradients are fp32 and accumulated (+=).
// Each call enqueues on the stream the handle is bound to (cublasSetStream) and returns
// cuBLAS's status. Not thread-safe per handle (cuBLAS's rule).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>

namespace moerun::kernels::cuda {

// C[m,n] = alpha · op(A) · op(B) + beta · C; lda/ldb/ldc are row strides.
template <typename T>
cublasStatus_t Gemm(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, float alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
                    float beta, T* c, int64_t ldc);

// Linear without bias, weights [out, in]: y = x · Wᵀ; backward dx (+)= dy · W and
// dw (fp32) += dyᵀ · x.
template <typename T>
cublasStatus_t LinearForward(cublasHandle_t handle, const T* x, const T* w, T* y, int64_t n,
                             int64_t in, int64_t out);
template <typename T>
cublasStatus_t LinearBackward(cublasHandle_t handle, const T* dy, const T* x, const T* w, T* dx,
                              float* dw, int64_t n, int64_t in, int64_t out, bool accumulate_dx);

// The experts of one MoE layer: expert e's rows are rows [offset_e, offset_e + rows[e]) of x
// (forward and dx: one grouped call each; the fp32 weight gradients: one GEMM per expert, as
// the grouped call cannot mix bf16 inputs with an fp32 output).
// and y (the dispatch plan's order), its weights w + e·out·in ([out, in]).
//   forward:  y_e = x_e · W_eᵀ
//   backward: dx_e = dy_e · W_e;  dw_e (fp32) += dy_eᵀ · x_e
// rows: host array [experts] (the plan's counts, known on the host for the all-to-all).
// pointers: device scratch of 3·experts pointers, written on the handle's stream ahead of
// the GEMM (calls on one stream may share it); nothing waits for the device.
// expert_stride: elements from one expert's weights (and gradients) to the next: out·in when
// 0 (a [E, out, in] tensor); 3·H·D for the per-expert gate/up/down of the model's layout.
template <typename T>
cublasStatus_t ExpertLinearForward(cublasHandle_t handle, const T* x, const T* w, T* y,
                                   const int64_t* rows, int64_t experts, int64_t in, int64_t out,
                                   void** pointers, int64_t expert_stride = 0);
// accumulate_dx: dx += (two products feeding one input, e.g. an MLP's gate and up).
template <typename T>
cublasStatus_t ExpertLinearBackward(cublasHandle_t handle, const T* dy, const T* x, const T* w,
                                    T* dx, float* dw, const int64_t* rows, int64_t experts,
                                    int64_t in, int64_t out, void** pointers,
                                    bool accumulate_dx = false, int64_t expert_stride = 0);

// c[m,n] (fp32, =) = a[m,k] · b[n,k]ᵀ with a and b in T: the router's logits in fp32 from
// activations and weights in storage precision.
template <typename T>
cublasStatus_t GemmNTToFloat(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* a,
                             const T* b, float* c);

}  // namespace moerun::kernels::cuda
