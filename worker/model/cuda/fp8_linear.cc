#include "worker/model/cuda/fp8_linear.h"

#include <cstdint>
#include <string>

#include "common/limits.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/fp8_quantize.cuh"

namespace moerun::model::cuda {
namespace {

namespace kc = moerun::kernels::cuda;

// kernels/cuda/cuda_status.h decides each error's code.
Status Cuda(cudaError_t e, const std::string& what) {
  return kc::CudaStatus(e, "fp8 linear on the GPU: " + what);
}

Status Lt(cublasStatus_t s, const std::string& what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::OK();
  if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
    return Status::Unimplemented("fp8 linear on the GPU: " + what +
                                 ": cuBLASLt has no block-scaled fp8 kernel for this GPU or "
                                 "shape (it needs Hopper, sm_90)");
  }
  return kc::CublasStatus(s, "fp8 linear on the GPU: " + what);
}

}  // namespace

template <typename V>
V* Fp8Linear::Alloc(int64_t count) {
  void* p = nullptr;
  if (cudaMalloc(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(V)) != cudaSuccess)
    return nullptr;
  owned_.push_back(p);
  return static_cast<V*>(p);
}

Result<std::unique_ptr<Fp8Linear>> Fp8Linear::Create(int64_t max_rows, int64_t max_features,
                                                     cudaStream_t stream) {
  std::unique_ptr<Fp8Linear> f(new Fp8Linear());
  f->max_rows_ = RoundUp16(max_rows);
  f->max_features_ = max_features;
  f->stream_ = stream;
  if (cublasLtCreate(&f->lt_) != CUBLAS_STATUS_SUCCESS) {
    f->lt_ = nullptr;
    return Status::Internal("fp8 linear on the GPU: cuBLASLt could not start");
  }
  const int64_t elems = f->max_rows_ * max_features;
  const int64_t tiles = kc::Tiles1x128ScaleCount(f->max_rows_, max_features);
  const int64_t bands = kc::Tiles128x1ScaleCount(f->max_rows_, max_features);
  f->workspace_ = f->Alloc<char>(static_cast<int64_t>(kCublasLtWorkspaceBytes));
  f->a_ = f->Alloc<__nv_fp8_e4m3>(elems);
  f->ta_ = f->Alloc<__nv_fp8_e4m3>(elems);
  f->tb_ = f->Alloc<__nv_fp8_e4m3>(elems);
  f->a_s_ = f->Alloc<float>(tiles);
  f->ta_s_ = f->Alloc<float>(bands);
  f->tb_s_ = f->Alloc<float>(bands);
  if (!f->workspace_ || !f->a_ || !f->ta_ || !f->tb_ || !f->a_s_ || !f->ta_s_ || !f->tb_s_) {
    return Status::Internal("fp8 linear on the GPU: out of GPU memory for " +
                            std::to_string(f->max_rows_) + " x " + std::to_string(max_features) +
                            " operands");
  }
  f->gemm_ = std::make_unique<kc::Fp8Gemm>(f->lt_, f->workspace_, kCublasLtWorkspaceBytes);
  return Result<std::unique_ptr<Fp8Linear>>(std::move(f));
}

Fp8Linear::~Fp8Linear() {
  gemm_.reset();
  for (void* p : owned_) cudaFree(p);
  if (lt_) cublasLtDestroy(lt_);
}

Result<Fp8Linear::Weight> Fp8Linear::NewWeight(int64_t out, int64_t in) {
  if (out % 16 != 0 || in % 16 != 0) {
    return Status::InvalidArgument("fp8 linear on the GPU: a " + std::to_string(out) + " x " +
                                   std::to_string(in) +
                                   " weight; fp8 GEMMs need both sizes multiples of 16");
  }
  Weight w;
  w.out = out;
  w.in = in;
  w.q = Alloc<__nv_fp8_e4m3>(out * in);
  w.qt = Alloc<__nv_fp8_e4m3>(out * in);
  w.s = Alloc<float>(kc::Blocks128ScaleCount(out, in));
  w.st = Alloc<float>(kc::Blocks128ScaleCount(in, out));
  if (!w.q || !w.qt || !w.s || !w.st) {
    return Status::Internal("fp8 linear on the GPU: out of GPU memory for a weight copy");
  }
  return w;
}

Status Fp8Linear::Quantize(const float* w, const Weight& dst) {
  return Cuda(kc::LaunchQuantizeE4M3Blocks128x128<float>(w, dst.out, dst.in, dst.q, dst.s, dst.qt,
                                                         dst.st, stream_),
              "quantizing a weight");
}

Status Fp8Linear::Quantize(const bf16* w, const Weight& dst) {
  return Cuda(kc::LaunchQuantizeE4M3Blocks128x128<bf16>(w, dst.out, dst.in, dst.q, dst.s, dst.qt,
                                                        dst.st, stream_),
              "quantizing a weight");
}

Status Fp8Linear::Check(int64_t n, const Weight& w, const void* out1, const void* out2) const {
  for (const void* p : {out1, out2}) {
    if (reinterpret_cast<uintptr_t>(p) % kc::kFp8MinAlignmentBytes != 0) {
      return Status::InvalidArgument("fp8 linear on the GPU: an output at " +
                                     std::to_string(reinterpret_cast<uintptr_t>(p)) +
                                     " is not 16-byte aligned, as cuBLASLt's fp8 GEMMs need");
    }
  }
  if (n < 0 || RoundUp16(n) > max_rows_ || w.in > max_features_ || w.out > max_features_) {
    return Status::InvalidArgument("fp8 linear on the GPU: " + std::to_string(n) + " rows of " +
                                   std::to_string(w.in) + " -> " + std::to_string(w.out) +
                                   " features; sized for " + std::to_string(max_rows_) +
                                   " rows and " + std::to_string(max_features_) + " features");
  }
  return Status::OK();
}

Status Fp8Linear::Forward(const bf16* x, const Weight& w, bf16* y, int64_t n, bool accumulate) {
  MOERUN_RETURN_IF_ERROR(Check(n, w, y, y));
  if (n == 0) return Status::OK();
  const int64_t rows = RoundUp16(n);
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchQuantizeE4M3Tiles1x128<bf16>(x, n, w.in, a_, a_s_, stream_, rows), "quantizing x"));
  return Lt(gemm_->Run<bf16>(rows, w.out, w.in, {a_, a_s_, kc::Fp8Scaling::kTiles1x128},
                             {w.q, w.s, kc::Fp8Scaling::kBlocks128x128}, accumulate, y, stream_),
            "forward GEMM");
}

Status Fp8Linear::Backward(const bf16* dy, const bf16* x, const Weight& w, bf16* dx, float* dw,
                           int64_t n, bool accumulate_dx) {
  MOERUN_RETURN_IF_ERROR(Check(n, w, dx, dw));
  if (n == 0) return Status::OK();
  const int64_t rows = RoundUp16(n);
  // dx = dy · W: dy in 1x128 tiles along out, W's transposed copy.
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchQuantizeE4M3Tiles1x128<bf16>(dy, n, w.out, a_, a_s_, stream_, rows), "dy tiles"));
  MOERUN_RETURN_IF_ERROR(
      Lt(gemm_->Run<bf16>(rows, w.in, w.out, {a_, a_s_, kc::Fp8Scaling::kTiles1x128},
                          {w.qt, w.st, kc::Fp8Scaling::kBlocks128x128}, accumulate_dx, dx, stream_),
         "dgrad GEMM"));
  // dW += dyᵀ · x: both in 128x1 tiles along tokens, transposed so tokens are contiguous.
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchQuantizeE4M3Tiles128x1Transposed<bf16>(dy, n, w.out, ta_, ta_s_, stream_, rows),
      "dy along tokens"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchQuantizeE4M3Tiles128x1Transposed<bf16>(x, n, w.in, tb_, tb_s_, stream_, rows),
           "x along tokens"));
  return Lt(gemm_->Run<float>(w.out, w.in, rows, {ta_, ta_s_, kc::Fp8Scaling::kTiles1x128},
                              {tb_, tb_s_, kc::Fp8Scaling::kTiles1x128}, true, dw, stream_),
            "wgrad GEMM");
}

}  // namespace moerun::model::cuda
