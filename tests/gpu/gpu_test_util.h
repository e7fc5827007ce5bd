// Helpers of the GPU tests: device arrays of float or bf16, random data, the error measure
// the CUDA-vs-CPU comparisons use, and the table tests/gpu/run.sh prints at the end.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/spec_loader.h"

namespace moerun::gpu_testing {

#define CUDA_OK(expr) REQUIRE_EQ(cudaSuccess, (expr))

// The source tree (test configs), where this binary was built unless MOERUN_SOURCE_DIR says
// otherwise: binaries packed by scripts/gpu-bundle.sh run on another machine.
inline std::string SourceDir() {
  const char* e = std::getenv("MOERUN_SOURCE_DIR");
  return e != nullptr && *e != '\0' ? std::string(e) : std::string(MOERUN_SOURCE_DIR);
}
// A job spec from tests/configs/ (the test stops when it does not load).
inline JobSpec TestConfig(const std::string& file) {
  auto loaded = LoadJobSpecFile(SourceDir() + "/tests/configs/" + file);
  REQUIRE_MESSAGE(loaded.ok(), loaded.Report());
  return loaded.spec;
}

// Whether device 0 is a Hopper GPU (sm_90): the only one with cuBLASLt's 1x128 / 128x128
// block-scaled fp8 GEMMs. fp8 checks elsewhere say they were skipped.
inline bool IsHopper() {
  cudaDeviceProp prop{};
  return cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major == 9;
}

// The training corpus in place of a config's data.paths, when MOERUN_TEST_CORPUS is set.
inline std::string TestCorpus() {
  const char* e = std::getenv("MOERUN_TEST_CORPUS");
  return e != nullptr ? std::string(e) : std::string();
}

// A device array of n values of T (float, __nv_bfloat16, int32_t, int64_t, double, void*).
template <typename T>
struct DeviceArray {
  explicit DeviceArray(size_t n) : n(n) {
    CUDA_OK(cudaMalloc(&ptr, std::max<size_t>(1, n) * sizeof(T)));
  }
  DeviceArray(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
  void Upload(const std::vector<T>& v) {
    REQUIRE(v.size() == n);
    CUDA_OK(cudaMemcpy(ptr, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> Download() const {
    std::vector<T> v(n);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(v.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  T* ptr = nullptr;
  size_t n;
};

inline std::vector<float> Normal(size_t n, uint32_t seed, float std = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Storage conversions on the host (bf16 tests feed the CPU twin the bf16-rounded values).
template <typename T>
std::vector<T> FromFloats(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = T(v[i]);
  return out;
}
template <typename T>
std::vector<float> ToFloats(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float(v[i]);
  return out;
}
// The values a T-storage kernel actually sees: bf16-rounded for bf16, unchanged for fp32.
template <typename T>
std::vector<float> AsStored(const std::vector<float>& v) {
  return ToFloats(FromFloats<T>(v));
}
inline std::vector<float> RoundedToBf16(const std::vector<float>& v) {
  return AsStored<__nv_bfloat16>(v);
}

// max |got − want| / max |want|: an error relative to the tensor's scale, so values near zero
// do not dominate. 0 for two empty or all-zero tensors; infinite when either side holds a
// NaN or an infinity (what a wrong buffer tends to produce), so no bound accepts it.
inline double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return HUGE_VAL;
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// Relative error bounds per storage precision: fp32 kernels differ from the CPU only in
// summation order and fused multiply-adds; bf16 storage rounds every stored value to 8 bits.
template <typename T>
constexpr double Tolerance();
template <>
constexpr double Tolerance<float>() {
  return 2e-5;
}
template <>
constexpr double Tolerance<__nv_bfloat16>() {
  return 2e-2;
}
template <typename T>
const char* PrecisionName();
template <>
inline const char* PrecisionName<float>() {
  return "fp32";
}
template <>
inline const char* PrecisionName<__nv_bfloat16>() {
  return "bf16";
}

// One row of the final table: op, precision, max relative error, the bound it met, and the
// kernel's time and rate at the test's shape (bytes moved or FLOPs done, when known).
struct OpResult {
  std::string op, precision;
  double max_rel_error = 0, bound = 0, ms = 0;
  double bytes = 0, flops = 0;
};
void Record(const OpResult& r);
void PrintTable();

// One op's CUDA result against its CPU twin: a row of the table, and a failed check when the
// max relative error exceeds the precision's bound. ms, bytes and flops describe the kernel.
template <typename T>
void CheckOp(const std::string& op, const std::vector<float>& got, const std::vector<float>& want,
             double ms = 0, double bytes = 0, double flops = 0) {
  const double err = MaxRelError(got, want);
  Record({op, PrecisionName<T>(), err, Tolerance<T>(), ms, bytes, flops});
  CHECK_MESSAGE(err <= Tolerance<T>(), op << " " << PrecisionName<T>() << ": max rel error " << err
                                          << " > " << Tolerance<T>());
}

// A device array's values as floats.
template <typename T>
std::vector<float> Get(const DeviceArray<T>& a) {
  return ToFloats(a.Download());
}

// Milliseconds of `launch` on the default stream (after one warm-up call), by CUDA events.
template <typename F>
double TimeMs(F&& launch) {
  launch();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  launch();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace moerun::gpu_testing
