// The GPU tests' entry point: without a CUDA device the binary says why and exits 77, which
// CTest reports as skipped; with one it runs every case and prints the ops table, each rate
// also as a share of the GPU's peak (memory bandwidth; cuBLAS's GEMM rate, measured).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <mutex>

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/runtime_info.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/trainer/gpu_stage.h"

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

namespace {

// What the table's rates are measured against: device memory's theoretical bandwidth (from the
// device's memory clock and bus width) and cuBLAS's own dense GEMM rate at 8192^3 in bf16 and
// 4096^3 in fp32, measured here (the "GEMM peak" the performance targets speak of).
struct Peaks {
  double gb_s = 0, bf16_tflops = 0, fp32_tflops = 0;
};

// Outside any test case, so no doctest checks here: 0 when something fails.
template <typename T>
double GemmTflops(cublasHandle_t handle, int64_t n) {
  const std::vector<T> values = FromFloats<T>(Normal(size_t(n * n), 7, 0.01f));
  const size_t bytes = values.size() * sizeof(T);
  T *a = nullptr, *b = nullptr, *c = nullptr;
  double tflops = 0;
  if (cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess &&
      cudaMalloc(&c, bytes) == cudaSuccess &&
      cudaMemcpy(a, values.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
      cudaMemcpy(b, values.data(), bytes, cudaMemcpyHostToDevice) == cudaSuccess) {
    bool ok = true;
    const double ms = TimeMs([&] {
      ok = ok && kernels::cuda::Gemm<T>(handle, false, true, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                                        n) == CUBLAS_STATUS_SUCCESS;
    });
    if (ok && ms > 0) tflops = 2.0 * double(n) * double(n) * double(n) / (ms * 1e9);
  }
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return tflops;
}

Peaks MeasurePeaks() {
  Peaks p;
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess) {
    p.gb_s = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;  // double data rate
  }
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return p;
  p.bf16_tflops = GemmTflops<__nv_bfloat16>(handle, 8192);
  p.fp32_tflops = GemmTflops<float>(handle, 4096);
  cublasDestroy(handle);
  return p;
}

}  // namespace

void PrintTable() {
  const Peaks peaks = MeasurePeaks();
  std::printf(
      "\nPeaks: memory %.0f GB/s (theoretical), cuBLAS GEMM %.1f TFLOP/s bf16 (8192^3), "
      "%.1f TFLOP/s fp32 (4096^3), measured now\n",
      peaks.gb_s, peaks.bf16_tflops, peaks.fp32_tflops);
  std::printf("%-28s %-5s %12s %10s %10s %10s %6s %10s %6s\n", "op", "prec", "max rel err", "bound",
              "ms", "GB/s", "%peak", "TFLOP/s", "%peak");
  for (const auto& r : Results()) {
    std::printf("%-28s %-5s %12.3e %10.1e %10.4f", r.op.c_str(), r.precision.c_str(),
                r.max_rel_error, r.bound, r.ms);
    if (r.bytes > 0 && r.ms > 0) {
      const double gb_s = r.bytes / r.ms / 1e6;
      std::printf(" %10.1f %6.1f", gb_s, peaks.gb_s > 0 ? 100.0 * gb_s / peaks.gb_s : 0.0);
    } else {
      std::printf(" %10s %6s", "-", "-");
    }
    if (r.flops > 0 && r.ms > 0) {
      // fp32 rows against the fp32 GEMM, the rest (bf16, fp8) against bf16's.
      const double tflops = r.flops / r.ms / 1e9;
      const double peak = r.precision == "fp32" ? peaks.fp32_tflops : peaks.bf16_tflops;
      std::printf(" %10.2f %6.1f", tflops, peak > 0 ? 100.0 * tflops / peak : 0.0);
    } else {
      std::printf(" %10s %6s", "-", "-");
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
