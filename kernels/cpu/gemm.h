// Dense matrix products on the CPU: fp32 through oneDNN's matmul (kernels/cpu/dnnl_matmul.h;
// as fast as OpenBLAS or faster at the models' shapes on the machines measured:
// docs/performance.md), fp64 (the finite-difference tests) through OpenBLAS's cblas_dgemm.
// Row-major throughout. Templates are instantiated for float (training) and double.
// SetBlasThreads picks the thread count of both libraries (oneDNN's is OpenMP's).
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

// C[m,n] = alpha * op(A) * op(B) + beta * C, op(X) = X or Xᵀ; lda/ldb/ldc are row strides.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Linear layer without bias, weights stored [out, in] (Hugging Face layout).
//   forward:  y[N,out] = x[N,in] · Wᵀ
//   backward: dx[N,in] (+)= dy · W  (accumulates when accumulate_dx)
//             dW[out,in] += dyᵀ · x (always accumulates: gradients sum over micro-batches)
template <typename T>
void LinearForward(const T* x, const T* w, T* y, int64_t n, int64_t in, int64_t out);
template <typename T>
void LinearBackward(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t n, int64_t in,
                    int64_t out, bool accumulate_dx);

void SetBlasThreads(int threads);

}  // namespace moerun::kernels::cpu
