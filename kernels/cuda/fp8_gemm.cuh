// fp8 GEMMs with DeepSeek-V3's fine-grained scaling through cuBLASLt on Hopper (sm_90):
// E4M3 operands whose scales are per 1x128 tile (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) or
// per 128x128 block (_BLK128x128_32F) along the contraction dimension, fp32 accumulation
// (fast accumulation off, which block scaling requires), fp32 or bf16 output. Operands come
// from kernels/cuda/fp8_quantize.cuh, whose layouts these scale modes read. The CPU twin is
// kernels/cpu/precision.h's FakeQuant followed by an fp32 GEMM (worker/model/linear.h).
//
//   c[m, n] = a[m, k] · b[n, k]ᵀ  (+ c when accumulate)
// a and b are row-major with k contiguous (cuBLASLt's "TN" form, the only fp8 layout Hopper
// supports); a is scaled per 1x128 tile, b per 1x128 tile or per 128x128 block:
//   forward  y  = x · Wᵀ :  a = x  [tokens, in]  tiles,  b = W  [out, in]  blocks
//   dgrad    dx = dy · W :  a = dy [tokens, out] tiles,  b = Wᵀ [in, out]  blocks
//   wgrad    dW = dyᵀ · x:  a = dyᵀ [out, tokens] tiles, b = xᵀ [in, tokens] tiles (128x1 of
//                           the untransposed tensors)
// Requirements (cuBLASLt's for fp8): k a multiple of 16; m and n multiples of 4 (the tile
// scales of a row band are 16-byte aligned); 16-byte aligned pointers. A shape cuBLASLt
// cannot run returns CUBLAS_STATUS_NOT_SUPPORTED, never a wrong result; so does a GPU other
// than Hopper, where these scale modes do not exist. k = 0 leaves c (accumulate) or zeroes it.
//
// Not thread-safe (one per stream). Algorithms are looked up once per shape and cached.
// CUDA 13.0's cuBLASLt has no grouped batch mode, so an MoE layer's fp8 expert GEMMs are one
// call per expert on the same stream.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

namespace moerun::kernels::cuda {

enum class Fp8Scaling { kTiles1x128, kBlocks128x128 };

// The operand alignment every call may rely on (and algorithms are chosen for).
inline constexpr uint32_t kFp8MinAlignmentBytes = 16;

struct Fp8Operand {
  const __nv_fp8_e4m3* values = nullptr;  // [rows, k] row-major
  const float* scales = nullptr;          // fp8_quantize.cuh's layout for `scaling`
  Fp8Scaling scaling = Fp8Scaling::kTiles1x128;
};

class Fp8Gemm {
 public:
  // `workspace` (device, `workspace_bytes`, 32 MiB suggested on Hopper) is used by every
  // call; the handle and workspace outlive this object.
  Fp8Gemm(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}

  // C is float or __nv_bfloat16. a must be kTiles1x128.
  template <typename C>
  cublasStatus_t Run(int64_t m, int64_t n, int64_t k, const Fp8Operand& a, const Fp8Operand& b,
                     bool accumulate, C* c, cudaStream_t stream);

 private:
  // (m, n, k, b's scaling, output type, accumulate)
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int, bool>;
  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Key, cublasLtMatmulAlgo_t> algos_;
};

}  // namespace moerun::kernels::cuda
