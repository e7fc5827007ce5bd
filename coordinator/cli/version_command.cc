// moerun version: the build, the CPU GEMM library and the kernels it picks on this machine
// (oneDNN: its version, instruction set and implementation per operand type), and, when built
// with CUDA, the CUDA/NCCL/cuBLAS versions it was compiled against. The CLI does not load the
// CUDA libraries (they cost ~0.5 s per call); trainers report the GPUs they see.
#include <cstdio>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"
#include "kernels/cpu/dnnl_matmul.h"
#ifdef MOERUN_WITH_CUDA
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

#ifndef MOERUN_VERSION
#define MOERUN_VERSION "unknown"
#endif

namespace moerun::cli {
namespace {

int RunVersion() {
  std::printf("moerun %s\n", MOERUN_VERSION);
  std::printf("CPU GEMMs: %s\n", kernels::cpu::DnnlKernelInfo().c_str());
#ifdef MOERUN_WITH_CUDA
  std::printf("built with CUDA %d.%d (architectures %s), NCCL %d.%d.%d, cuBLAS %d.%d.%d\n",
              CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10, MOERUN_CUDA_ARCHS, NCCL_MAJOR,
              NCCL_MINOR, NCCL_PATCH, CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
#else
  std::printf("built without CUDA (configure with -DMOERUN_CUDA=ON to add the GPU backend)\n");
#endif
  return kExitOk;
}

}  // namespace

void AddVersionCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd =
      app.add_subcommand("version", "Print moerun's version and the CUDA stack it was built with");
  cmd->callback([exit_code] { *exit_code = RunVersion(); });
}

}  // namespace moerun::cli
