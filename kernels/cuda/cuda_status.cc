#include "kernels/cuda/cuda_status.h"

#include <string>

namespace moerun::kernels::cuda {
namespace {

std::string Message(std::string_view what, const char* name, const char* description) {
  std::string m(what);
  m += ": ";
  m += name;
  m += ": ";
  m += description;
  return m;
}

}  // namespace

Status CudaStatus(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess) return Status::OK();
  std::string m = Message(what, cudaGetErrorName(e), cudaGetErrorString(e));
  switch (e) {
    case cudaErrorMemoryAllocation:
      return Status::ResourceExhausted(
          m +
          " (out of device memory: lower train.global_batch, raise micro_batches or "
          "pipeline stages, or use bf16)");
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return Status::Unimplemented(std::move(m));
    case cudaErrorInvalidDevice:
      return Status::InvalidArgument(std::move(m));
    case cudaErrorECCUncorrectable:
    case cudaErrorHardwareStackError:
    case cudaErrorDevicesUnavailable:
    case cudaErrorLaunchTimeout:
    case cudaErrorSystemNotReady:
      return Status::Unavailable(std::move(m));
    default:
      return Status::Internal(std::move(m));
  }
}

Status CublasStatus(cublasStatus_t s, std::string_view what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::OK();
  std::string m = Message(what, cublasGetStatusName(s), cublasGetStatusString(s));
  switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return Status::ResourceExhausted(m + " (out of device memory)");
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return Status::Unimplemented(std::move(m));
    default:
      return Status::Internal(std::move(m));
  }
}

}  // namespace moerun::kernels::cuda
