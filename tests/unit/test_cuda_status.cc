// The one CUDA/cuBLAS -> Status mapping (kernels/cuda/cuda_status.h): out of memory apart
// from internal errors, a missing GPU or kernel never retried, each message naming the error.
// Runs without a GPU: the mapping and the runtime's error names need no device.
#include <doctest/doctest.h>

#include "common/exit_codes.h"
#include "kernels/cuda/cuda_status.h"

namespace moerun::kernels::cuda {
namespace {

TEST_CASE("CUDA errors: each kind gets its code, and the exit code its retry policy") {
  CHECK(CudaStatus(cudaSuccess, "x").ok());
  const Status oom = CudaStatus(cudaErrorMemoryAllocation, "model on the GPU: activations");
  CHECK(oom.code() == Status::Code::kResourceExhausted);
  CHECK(oom.message().find("model on the GPU: activations: cudaErrorMemoryAllocation") == 0);
  CHECK(oom.message().find("global_batch") != std::string::npos);
  CHECK(ExitCodeFor(oom) == kExitFailure);  // retried: a restart frees the memory
  for (cudaError_t e :
       {cudaErrorNoDevice, cudaErrorInsufficientDriver, cudaErrorNoKernelImageForDevice}) {
    CHECK(CudaStatus(e, "x").code() == Status::Code::kUnimplemented);
    CHECK(IsNonRetryableExit(ExitCodeFor(CudaStatus(e, "x"))));
  }
  CHECK(CudaStatus(cudaErrorInvalidDevice, "x").code() == Status::Code::kInvalidArgument);
  CHECK(CudaStatus(cudaErrorECCUncorrectable, "x").code() == Status::Code::kUnavailable);
  const Status bug = CudaStatus(cudaErrorIllegalAddress, "GPU step: stage input");
  CHECK(bug.code() == Status::Code::kInternal);
  CHECK(bug.message().find("cudaErrorIllegalAddress") != std::string::npos);
}

TEST_CASE("cuBLAS errors: allocation, unsupported, the rest") {
  CHECK(CublasStatus(CUBLAS_STATUS_SUCCESS, "x").ok());
  CHECK(CublasStatus(CUBLAS_STATUS_ALLOC_FAILED, "x").code() == Status::Code::kResourceExhausted);
  CHECK(CublasStatus(CUBLAS_STATUS_NOT_SUPPORTED, "x").code() == Status::Code::kUnimplemented);
  CHECK(CublasStatus(CUBLAS_STATUS_ARCH_MISMATCH, "x").code() == Status::Code::kUnimplemented);
  const Status s = CublasStatus(CUBLAS_STATUS_EXECUTION_FAILED, "expert gate GEMM");
  CHECK(s.code() == Status::Code::kInternal);
  CHECK(s.message().find("expert gate GEMM: CUBLAS_STATUS_EXECUTION_FAILED") == 0);
}

}  // namespace
}  // namespace moerun::kernels::cuda
