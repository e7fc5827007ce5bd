// The GPU tests' entry point: without a CUDA device the binary says why and exits 77, which
// CTest reports as skipped; with one it runs every case and prints the ops table.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <mutex>

#include "kernels/cuda/runtime_info.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/trainer/gpu_step_runner.h"

namespace moerun::gpu_testing {
namespace {

std::mutex mu;
std::vector<OpResult>& Results() {
  static std::vector<OpResult> r;
  return r;
}

}  // namespace

void Record(const OpResult& r) {
  std::lock_guard<std::mutex> lock(mu);
  Results().push_back(r);
}

void PrintTable() {
  std::printf("\n%-28s %-5s %12s %10s %10s %10s %10s\n", "op", "prec", "max rel err", "bound", "ms",
              "GB/s", "TFLOP/s");
  for (const auto& r : Results()) {
    std::printf("%-28s %-5s %12.3e %10.1e %10.4f", r.op.c_str(), r.precision.c_str(),
                r.max_rel_error, r.bound, r.ms);
    if (r.bytes > 0 && r.ms > 0) {
      std::printf(" %10.1f", r.bytes / r.ms / 1e6);
    } else {
      std::printf(" %10s", "-");
    }
    if (r.flops > 0 && r.ms > 0) {
      std::printf(" %10.2f", r.flops / r.ms / 1e9);
    } else {
      std::printf(" %10s", "-");
    }
    std::printf("\n");
  }
}

}  // namespace moerun::gpu_testing

int main(int argc, char** argv) {
  auto info = moerun::kernels::cuda::QueryRuntimeInfo();
  if (!info.NoDeviceReason().empty()) {
    std::printf("SKIPPED: %s; GPU tests run on a machine with a GPU\n",
                info.NoDeviceReason().c_str());
    return 77;
  }
  std::printf("GPU: %s (sm_%d)\n", info.device0_name.c_str(), info.device0_sm);
  moerun::trainer::RegisterGpuStep();  // test_trainer_cuda.cc trains through Train()
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  moerun::gpu_testing::PrintTable();
  return rc;
}
