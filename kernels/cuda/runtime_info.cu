#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "kernels/cuda/runtime_info.h"

namespace moerun::kernels::cuda {

RuntimeInfo QueryRuntimeInfo() {
  RuntimeInfo info;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  ncclGetVersion(&info.nccl_version);
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  info.cublas_version = major * 10000 + minor * 100 + patch;
  cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess) {
    info.device_count = 0;
    info.driver_error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return info;
  }
  if (info.device_count > 0) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
      info.device0_name = prop.name;
      info.device0_sm = prop.major * 10 + prop.minor;
    }
  }
  return info;
}

}  // namespace moerun::kernels::cuda
