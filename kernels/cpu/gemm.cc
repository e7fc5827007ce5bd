#include "kernels/cpu/gemm.h"

#include <cblas.h>
#ifndef MOERUN_NO_OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/op_profile.h"

namespace moerun::kernels::cpu {

template <>
void Gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  DnnlGemm(GemmOperands::kF32, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void Gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  ScopedOp profile_op(Op::kGemmF64);
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

template <typename T>
void LinearForward(const T* x, const T* w, T* y, int64_t n, int64_t in, int64_t out) {
  Gemm<T>(false, true, n, out, in, T(1), x, in, w, in, T(0), y, out);
}

template <typename T>
void LinearBackward(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t n, int64_t in,
                    int64_t out, bool accumulate_dx) {
  if (dx != nullptr) {
    Gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, accumulate_dx ? T(1) : T(0), dx, in);
  }
  if (dw != nullptr && n > 0) Gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
}

void SetBlasThreads(int threads) {
  openblas_set_num_threads(threads);
#ifndef MOERUN_NO_OPENMP
  omp_set_num_threads(threads);  // oneDNN's runtime
#endif
}

#define MOERUN_INSTANTIATE(T)                                                                      \
  template void LinearForward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);               \
  template void LinearBackward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, \
                                  bool);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cpu
