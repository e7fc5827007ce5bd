#include "kernels/cuda/data_type.h"
#include "kernels/cuda/fp8_gemm.cuh"

namespace moerun::kernels::cuda {
namespace {

int32_t ScaleMode(Fp8Scaling s) {
  return s == Fp8Scaling::kTiles1x128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                      : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
}

// Owns the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  ~Descriptors() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

#define MOERUN_LT(call)                         \
  do {                                          \
    const cublasStatus_t s_ = (call);           \
    if (s_ != CUBLAS_STATUS_SUCCESS) return s_; \
  } while (0)

}  // namespace

template <typename C>
cublasStatus_t Fp8Gemm::Run(int64_t m, int64_t n, int64_t k, const Fp8Operand& a,
                            const Fp8Operand& b, bool accumulate, C* c, cudaStream_t stream) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (k == 0) {  // an empty sum (an expert without tokens): c stays, or becomes 0
    if (accumulate) return CUBLAS_STATUS_SUCCESS;
    return cudaMemsetAsync(c, 0, static_cast<size_t>(m * n) * sizeof(C), stream) == cudaSuccess
               ? CUBLAS_STATUS_SUCCESS
               : CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (k % 16 != 0 || m % 4 != 0 || n % 4 != 0 || a.scaling != Fp8Scaling::kTiles1x128) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  // Row-major c[m,n] is column-major cᵀ[n,m] = b[n,k] · a[m,k]ᵀ: cuBLASLt's A is our b
  // (k×n column-major, transposed), its B is our a (k×m column-major, as is).
  Descriptors desc;
  MOERUN_LT(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const int32_t a_mode = ScaleMode(b.scaling), b_mode = ScaleMode(a.scaling);
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode,
                                           sizeof a_mode));
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode,
                                           sizeof b_mode));
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &b.scales,
                                           sizeof b.scales));
  MOERUN_LT(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a.scales,
                                           sizeof a.scales));
  MOERUN_LT(cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_8F_E4M3, static_cast<uint64_t>(k),
                                       static_cast<uint64_t>(n), k));
  MOERUN_LT(cublasLtMatrixLayoutCreate(&desc.b, CUDA_R_8F_E4M3, static_cast<uint64_t>(k),
                                       static_cast<uint64_t>(m), k));
  MOERUN_LT(cublasLtMatrixLayoutCreate(&desc.d, DataTypeOf<C>(), static_cast<uint64_t>(n),
                                       static_cast<uint64_t>(m), n));

  const Key key{m,         n, k, static_cast<int>(b.scaling), static_cast<int>(DataTypeOf<C>()),
                accumulate};
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    cublasLtMatmulPreference_t pref = nullptr;
    MOERUN_LT(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof workspace_bytes_);
    // Algorithms that need no more than the 16-byte alignment this header promises, so a
    // cached one runs on any operand (e.g. one expert's slice of a larger buffer).
    const uint32_t align = kFp8MinAlignmentBytes;
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
    }
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(handle_, desc.op, desc.a, desc.b, desc.d, desc.d, pref, 1,
                                          &result, &found);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;  // e.g. not a Hopper GPU
    it = algos_.emplace(key, result.algo).first;
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  return cublasLtMatmul(handle_, desc.op, &alpha, b.values, desc.a, a.values, desc.b, &beta, c,
                        desc.d, c, desc.d, &it->second, workspace_, workspace_bytes_, stream);
}

template cublasStatus_t Fp8Gemm::Run<float>(int64_t, int64_t, int64_t, const Fp8Operand&,
                                            const Fp8Operand&, bool, float*, cudaStream_t);
template cublasStatus_t Fp8Gemm::Run<__nv_bfloat16>(int64_t, int64_t, int64_t, const Fp8Operand&,
                                                    const Fp8Operand&, bool, __nv_bfloat16*,
                                                    cudaStream_t);

}  // namespace moerun::kernels::cuda
