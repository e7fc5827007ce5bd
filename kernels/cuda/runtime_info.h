// What the CUDA stack of this process can see: library versions and devices. Safe to call on
// a machine without a GPU or driver (device_count is then 0 and driver_error says why).
// Declared in a plain C++ header so host code and tests need no CUDA headers.
#pragma once

#include <string>

namespace moerun::kernels::cuda {

struct RuntimeInfo {
  int runtime_version = 0;  // e.g. 13000 for CUDA 13.0
  int driver_version = 0;   // 0 when no driver is installed
  int nccl_version = 0;     // e.g. 22805 for NCCL 2.28.5
  int cublas_version = 0;   // major * 10000 + minor * 100 + patch
  int device_count = 0;
  std::string driver_error;  // why device_count is 0, if it is
  std::string device0_name;
  int device0_sm = 0;  // compute capability, e.g. 90

  // Why nothing can run on a GPU here ("no CUDA device (...)"), or "" when a device is present.
  std::string NoDeviceReason() const {
    if (device_count > 0) return "";
    return "no CUDA device (" + (driver_error.empty() ? std::string("none found") : driver_error) +
           ")";
  }
};

RuntimeInfo QueryRuntimeInfo();

}  // namespace moerun::kernels::cuda
