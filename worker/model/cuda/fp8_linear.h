// Fp8Linear: DeepSeek-V3's fp8 linear layer on the GPU, the twin of worker/model/linear.h's
// GemmPrecision::kFp8 (docs/architecture.md §4): bf16 activations quantized to E4M3 in 1x128 tiles,
// weights in 128x128 blocks, wgrad operands in 128x1 tiles along tokens; block-scaled
// cuBLASLt GEMMs (kernels/cuda/fp8_gemm.cuh) with fp32 accumulation.
//
// Rows (tokens) are padded to a multiple of 16 inside, as cuBLASLt's fp8 kernels require; the
// padding rows are zero, so they add nothing. Outputs with rows (y, dx) therefore need room
// for RoundUp16(n) rows: the rows past n are written 0 (or left as they are when
// accumulating). An MoE layer runs its experts in order over one buffer with 16 rows of
// slack at its end, so each expert's spill is overwritten by the next expert's rows.
// Feature sizes (in, out) must be multiples of 16, and y, dx and dw 16-byte aligned (checked).
//
// Weights are quantized into a Weight (its fp8 copy and the transposed copy for dgrad) when
// they change; every forward and backward until then reuses it. Scratch for the operands is sized
// at Create. All work goes on the stream given at Create; nothing synchronizes. Not thread-safe.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "kernels/cuda/fp8_gemm.cuh"

namespace moerun::model::cuda {

inline int64_t RoundUp16(int64_t n) { return (n + 15) / 16 * 16; }

class Fp8Linear {
 public:
  using bf16 = __nv_bfloat16;

  // An [out, in] weight in E4M3: q [out, in] with 128x128 block scales s, and qt [in, out]
  // with the same scales on the transposed grid (st).
  struct Weight {
    int64_t out = 0, in = 0;
    __nv_fp8_e4m3 *q = nullptr, *qt = nullptr;
    float *s = nullptr, *st = nullptr;
  };

  // Scratch for up to `max_rows` rows and `max_features` features per operand.
  static Result<std::unique_ptr<Fp8Linear>> Create(int64_t max_rows, int64_t max_features,
                                                   cudaStream_t stream);
  ~Fp8Linear();
  Fp8Linear(const Fp8Linear&) = delete;
  Fp8Linear& operator=(const Fp8Linear&) = delete;

  // Device memory for one weight's quantized copies, owned by this object.
  Result<Weight> NewWeight(int64_t out, int64_t in);
  // w: [out, in], the fp32 master (what the CPU twin quantizes) or a bf16 copy.
  Status Quantize(const float* w, const Weight& dst);
  Status Quantize(const bf16* w, const Weight& dst);

  // y[n, out] (=, or += with accumulate) = x[n, in] · Wᵀ.
  Status Forward(const bf16* x, const Weight& w, bf16* y, int64_t n, bool accumulate = false);
  // dx[n, in] (=, or += with accumulate_dx) = dy · W;  dw[out, in] (fp32) += dyᵀ · x.
  Status Backward(const bf16* dy, const bf16* x, const Weight& w, bf16* dx, float* dw, int64_t n,
                  bool accumulate_dx);

 private:
  Fp8Linear() = default;
  Status Check(int64_t n, const Weight& w, const void* out1, const void* out2) const;
  template <typename V>
  V* Alloc(int64_t count);

  int64_t max_rows_ = 0, max_features_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  std::unique_ptr<kernels::cuda::Fp8Gemm> gemm_;
  std::vector<void*> owned_;
  void* workspace_ = nullptr;
  // Operand scratch: a (1x128 tiles, [rows16, features]); ta, tb (128x1 tiles transposed,
  // [features, rows16]) for the weight gradient.
  __nv_fp8_e4m3 *a_ = nullptr, *ta_ = nullptr, *tb_ = nullptr;
  float *a_s_ = nullptr, *ta_s_ = nullptr, *tb_s_ = nullptr;
};

}  // namespace moerun::model::cuda
