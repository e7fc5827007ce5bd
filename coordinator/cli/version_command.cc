// moerun version: the build and, when built with CUDA, the CUDA/NCCL/cuBLAS stack and GPUs.
#include <cstdio>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"
#ifdef MOERUN_WITH_CUDA
#include "kernels/cuda/runtime_info.h"
#endif

#ifndef MOERUN_VERSION
#define MOERUN_VERSION "unknown"
#endif

namespace moerun::cli {
namespace {

#ifdef MOERUN_WITH_CUDA
// 22809 -> "2.28.9" for (10000, 100).
std::string Dotted(int v, int major_div, int minor_div) {
  return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / minor_div) + "." +
         std::to_string(v % minor_div);
}
#endif

int RunVersion() {
  std::printf("moerun %s\n", MOERUN_VERSION);
#ifdef MOERUN_WITH_CUDA
  kernels::cuda::RuntimeInfo info = kernels::cuda::QueryRuntimeInfo();
  std::printf("cuda runtime %d.%d, nccl %s, cublas %s\n", info.runtime_version / 1000,
              (info.runtime_version % 1000) / 10, Dotted(info.nccl_version, 10000, 100).c_str(),
              Dotted(info.cublas_version, 10000, 100).c_str());
  if (info.device_count == 0) {
    std::printf("gpus: none (%s)\n",
                info.driver_error.empty() ? "no device" : info.driver_error.c_str());
  } else {
    std::printf("gpus: %d (device 0: %s, sm_%d)\n", info.device_count, info.device0_name.c_str(),
                info.device0_sm);
  }
#else
  std::printf("built without CUDA (configure with -DMOERUN_CUDA=ON to add the GPU backend)\n");
#endif
  return kExitOk;
}

}  // namespace

void AddVersionCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("version", "Print moerun's version and the GPU stack it sees");
  cmd->callback([exit_code] { *exit_code = RunVersion(); });
}

}  // namespace moerun::cli
