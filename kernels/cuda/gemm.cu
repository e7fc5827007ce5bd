#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/data_type.h"
#include "kernels/cuda/gemm.cuh"

namespace moerun::kernels::cuda {
namespace {

cublasOperation_t Op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Pointer arrays reach the device as kernel parameters, which the launch copies: no host
// buffer has to outlive the call and nothing waits (a cudaMemcpyAsync from pageable memory
// would need the stream synchronized before the buffer dies). 256 pointers = 2 KiB, within
// the 4 KiB a launch may pass.
constexpr int kPointerChunk = 256;
struct PointerChunk {
  const void* p[kPointerChunk];
};

__global__ void StorePointersKernel(PointerChunk chunk, int count, const void** out) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < count) out[i] = chunk.p[i];
}

cudaError_t StorePointers(const std::vector<const void*>& host, void** device,
                          cudaStream_t stream) {
  const auto** out = const_cast<const void**>(device);
  for (size_t first = 0; first < host.size(); first += kPointerChunk) {
    PointerChunk chunk{};
    const int count = static_cast<int>(std::min<size_t>(kPointerChunk, host.size() - first));
    for (int i = 0; i < count; ++i) chunk.p[i] = host[first + size_t(i)];
    StorePointersKernel<<<1, kPointerChunk, 0, stream>>>(chunk, count, out + first);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: swap the operands.
cublasStatus_t RowMajorGemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                            float alpha, const void* a, cudaDataType_t at, int64_t lda,
                            const void* b, cudaDataType_t bt, int64_t ldb, float beta, void* c,
                            cudaDataType_t ct, int64_t ldc) {
  return cublasGemmEx(h, Op(tb), Op(ta), static_cast<int>(n), static_cast<int>(m),
                      static_cast<int>(k), &alpha, b, bt, static_cast<int>(ldb), a, at,
                      static_cast<int>(lda), &beta, c, ct, static_cast<int>(ldc),
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

// One group per expert with rows > 0 (cuBLAS rejects empty problems), as a row-major
// C_e = op(A_e) op(B_e) + beta C_e through the column-major swap. A/B/C hold each expert's
// base pointers; the pointer arrays are stored into `pointers` by a kernel on the handle's
// stream, ahead of the GEMM (calls in a row may share `pointers`: the stream orders them).
cublasStatus_t Grouped(cublasHandle_t h, bool ta, bool tb, const std::vector<int>& m,
                       const std::vector<int>& n, const std::vector<int>& k,
                       const std::vector<const void*>& a, cudaDataType_t at,
                       const std::vector<int>& lda, const std::vector<const void*>& b,
                       cudaDataType_t bt, const std::vector<int>& ldb, float beta,
                       const std::vector<void*>& c, cudaDataType_t ct, const std::vector<int>& ldc,
                       void** pointers) {
  const int groups = static_cast<int>(m.size());
  if (groups == 0) return CUBLAS_STATUS_SUCCESS;
  cudaStream_t stream = nullptr;
  cublasStatus_t st = cublasGetStream(h, &stream);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  // Column-major view: A' = B (op tb), B' = A (op ta), m' = n, n' = m.
  std::vector<const void*> host(3 * static_cast<size_t>(groups));
  for (int g = 0; g < groups; ++g) {
    host[g] = b[g];
    host[groups + g] = a[g];
    host[2 * groups + g] = c[g];
  }
  if (StorePointers(host, pointers, stream) != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  std::vector<cublasOperation_t> opa(groups, Op(tb)), opb(groups, Op(ta));
  std::vector<float> alpha(groups, 1.0f), betas(groups, beta);
  std::vector<int> size(groups, 1);
  const void* const* dev = const_cast<const void* const*>(pointers);
  return cublasGemmGroupedBatchedEx(h, opa.data(), opb.data(), n.data(), m.data(), k.data(),
                                    alpha.data(), dev, bt, ldb.data(), dev + groups, at, lda.data(),
                                    betas.data(),
                                    reinterpret_cast<void* const*>(pointers + 2 * groups), ct,
                                    ldc.data(), groups, size.data(), CUBLAS_COMPUTE_32F);
}

}  // namespace

template <typename T>
cublasStatus_t Gemm(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, float alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
                    float beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  return RowMajorGemm(handle, trans_a, trans_b, m, n, k, alpha, a, DataTypeOf<T>(), lda, b,
                      DataTypeOf<T>(), ldb, beta, c, DataTypeOf<T>(), ldc);
}

template <typename T>
cublasStatus_t LinearForward(cublasHandle_t handle, const T* x, const T* w, T* y, int64_t n,
                             int64_t in, int64_t out) {
  return Gemm<T>(handle, false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

template <typename T>
cublasStatus_t LinearBackward(cublasHandle_t handle, const T* dy, const T* x, const T* w, T* dx,
                              float* dw, int64_t n, int64_t in, int64_t out, bool accumulate_dx) {
  if (n == 0) return CUBLAS_STATUS_SUCCESS;
  cublasStatus_t s = Gemm<T>(handle, false, false, n, in, out, 1.0f, dy, out, w, in,
                             accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  // dw[out, in] += dyᵀ[out, n] · x[n, in], written in fp32.
  return RowMajorGemm(handle, true, false, out, in, n, 1.0f, dy, DataTypeOf<T>(), out, x,
                      DataTypeOf<T>(), in, 1.0f, dw, CUDA_R_32F, in);
}

namespace {

// The grouped call's arrays for the experts with rows: expert e's problem is rows of `a`
// (a_cols wide) against b + e·stride (ld b_ld) into rows of `c` (c_cols wide); inner = a_cols.
struct ExpertProblems {
  std::vector<int> m, n, k, lda, ldb, ldc;
  std::vector<const void*> a, b;
  std::vector<void*> c;
};

template <typename T>
ExpertProblems ExpertRows(const int64_t* rows, int64_t experts, const T* a, int64_t a_cols,
                          const T* b, int64_t b_ld, int64_t stride, T* c, int64_t c_cols) {
  ExpertProblems p;
  int64_t offset = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (rows[e] > 0) {
      p.m.push_back(static_cast<int>(rows[e]));
      p.n.push_back(static_cast<int>(c_cols));
      p.k.push_back(static_cast<int>(a_cols));
      p.a.push_back(a + offset * a_cols);
      p.lda.push_back(static_cast<int>(a_cols));
      p.b.push_back(b + e * stride);
      p.ldb.push_back(static_cast<int>(b_ld));
      p.c.push_back(c + offset * c_cols);
      p.ldc.push_back(static_cast<int>(c_cols));
    }
    offset += rows[e];
  }
  return p;
}

}  // namespace

template <typename T>
cublasStatus_t ExpertLinearForward(cublasHandle_t handle, const T* x, const T* w, T* y,
                                   const int64_t* rows, int64_t experts, int64_t in, int64_t out,
                                   void** pointers, int64_t expert_stride) {
  const int64_t stride = expert_stride > 0 ? expert_stride : out * in;
  // y_e[rows, out] = x_e[rows, in] · W_eᵀ
  const ExpertProblems p = ExpertRows(rows, experts, x, in, w, in, stride, y, out);
  return Grouped(handle, false, true, p.m, p.n, p.k, p.a, DataTypeOf<T>(), p.lda, p.b,
                 DataTypeOf<T>(), p.ldb, 0.0f, p.c, DataTypeOf<T>(), p.ldc, pointers);
}

template <typename T>
cublasStatus_t ExpertLinearBackward(cublasHandle_t handle, const T* dy, const T* x, const T* w,
                                    T* dx, float* dw, const int64_t* rows, int64_t experts,
                                    int64_t in, int64_t out, void** pointers, bool accumulate_dx,
                                    int64_t expert_stride) {
  const int64_t stride = expert_stride > 0 ? expert_stride : out * in;
  // dx_e[rows, in] = dy_e[rows, out] · W_e[out, in]
  const ExpertProblems p = ExpertRows(rows, experts, dy, out, w, in, stride, dx, in);
  cublasStatus_t s = Grouped(handle, false, false, p.m, p.n, p.k, p.a, DataTypeOf<T>(), p.lda, p.b,
                             DataTypeOf<T>(), p.ldb, accumulate_dx ? 1.0f : 0.0f, p.c,
                             DataTypeOf<T>(), p.ldc, pointers);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  // dw_e[out, in] += dy_eᵀ[out, rows] · x_e[rows, in], in fp32: one cublasGemmEx per expert,
  // because the grouped call takes one type for A, B and C (bf16 in, fp32 out is not among its
  // combinations) and the gradients must stay fp32.
  int64_t row0 = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (rows[e] > 0) {
      s = RowMajorGemm(handle, true, false, out, in, rows[e], 1.0f, dy + row0 * out,
                       DataTypeOf<T>(), out, x + row0 * in, DataTypeOf<T>(), in, 1.0f,
                       dw + e * stride, CUDA_R_32F, in);
      if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    row0 += rows[e];
  }
  return CUBLAS_STATUS_SUCCESS;
}

template <typename T>
cublasStatus_t GemmNTToFloat(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* a,
                             const T* b, float* c) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  return RowMajorGemm(handle, false, true, m, n, k, 1.0f, a, DataTypeOf<T>(), k, b, DataTypeOf<T>(),
                      k, 0.0f, c, CUDA_R_32F, n);
}

#define MOERUN_INSTANTIATE(T)                                                                   \
  template cublasStatus_t Gemm<T>(cublasHandle_t, bool, bool, int64_t, int64_t, int64_t, float, \
                                  const T*, int64_t, const T*, int64_t, float, T*, int64_t);    \
  template cublasStatus_t LinearForward<T>(cublasHandle_t, const T*, const T*, T*, int64_t,     \
                                           int64_t, int64_t);                                   \
  template cublasStatus_t LinearBackward<T>(cublasHandle_t, const T*, const T*, const T*, T*,   \
                                            float*, int64_t, int64_t, int64_t, bool);           \
  template cublasStatus_t ExpertLinearForward<T>(cublasHandle_t, const T*, const T*, T*,        \
                                                 const int64_t*, int64_t, int64_t, int64_t,     \
                                                 void**, int64_t);                              \
  template cublasStatus_t ExpertLinearBackward<T>(cublasHandle_t, const T*, const T*, const T*, \
                                                  T*, float*, const int64_t*, int64_t, int64_t, \
                                                  int64_t, void**, bool, int64_t);              \
  template cublasStatus_t GemmNTToFloat<T>(cublasHandle_t, int64_t, int64_t, int64_t, const T*, \
                                           const T*, float*);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
