// The one mapping from CUDA runtime and cuBLAS(Lt) errors to Status, for every host file
// that calls them. What each code means for the job (common/exit_codes.h, ExitCodeFor):
//   out of memory (cudaErrorMemoryAllocation, CUBLAS_STATUS_ALLOC_FAILED)
//       ResourceExhausted: exit 1, retried. A restart releases everything the process held
//       and memory another process held may be free by then; a job that never fits fails
//       after resources.max_restarts, the message saying what to shrink.
//   no usable GPU or driver, or no kernel for this GPU (cudaErrorNoDevice,
//   cudaErrorInsufficientDriver, cudaErrorNoKernelImageForDevice, cudaErrorUnsupportedPtxVersion,
//   CUBLAS_STATUS_NOT_SUPPORTED, CUBLAS_STATUS_ARCH_MISMATCH)
//       Unimplemented: exit 4, never retried (the same machine cannot do better).
//   a device index this host does not have (cudaErrorInvalidDevice)
//       InvalidArgument: exit 2, never retried (a placement that is wrong).
//   the device failed (cudaErrorECCUncorrectable, cudaErrorHardwareStackError,
//   cudaErrorDevicesUnavailable, cudaErrorLaunchTimeout, cudaErrorSystemNotReady)
//       Unavailable: exit 1, retried (the coordinator's restart, or a spare host).
//   anything else (an illegal address, a bad argument: a bug)
//       Internal: exit 1, retried, so a rare fault costs one restart from the last commit.
// Messages read "<what>: <error name>: <description>". Thread-safe.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string_view>

#include "common/status.h"

namespace moerun::kernels::cuda {

// OK for cudaSuccess.
Status CudaStatus(cudaError_t e, std::string_view what);
// OK for CUBLAS_STATUS_SUCCESS; cuBLASLt returns the same status type.
Status CublasStatus(cublasStatus_t s, std::string_view what);

}  // namespace moerun::kernels::cuda
