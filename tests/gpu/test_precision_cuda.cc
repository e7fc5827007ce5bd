// CUDA precision kernels against their CPU twins, bit for bit (tests/gpu/gpu_main.cc skips
// them without a GPU).
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/precision.h"
#include "kernels/cuda/precision.cuh"

namespace {

#define CUDA_OK(expr) REQUIRE_EQ(cudaSuccess, (expr))

struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : n(n) { CUDA_OK(cudaMalloc(&ptr, n * sizeof(float) + 1)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  float* ptr = nullptr;
  size_t n;
};

std::vector<float> RandomData(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-12.0f, 12.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng) * std::exp2(exponent(rng));  // many magnitudes
  return v;
}

std::vector<float> ToHost(const DeviceBuffer& b) {
  std::vector<float> v(b.n);
  CUDA_OK(cudaMemcpy(v.data(), b.ptr, b.n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

void Upload(DeviceBuffer& b, const std::vector<float>& v) {
  CUDA_OK(cudaMemcpy(b.ptr, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
}

size_t Mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return bad;
}

}  // namespace

TEST_CASE("bf16 rounding: CUDA equals CPU bit for bit") {
  const size_t n = 1 << 20;
  auto x = RandomData(n, 1);
  std::vector<float> want(n);
  moerun::kernels::cpu::RoundToBf16(x.data(), want.data(), int64_t(n));
  DeviceBuffer in(n), out(n);
  Upload(in, x);
  CUDA_OK(moerun::kernels::cuda::LaunchRoundToBf16(in.ptr, out.ptr, int64_t(n), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  CHECK(Mismatches(ToHost(out), want) == 0);
}

TEST_CASE("E4M3 1x128 tiles and 128x128 blocks: CUDA equals CPU bit for bit") {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 300}, {256, 512}, {129, 1000}}) {
    CAPTURE(rows);
    CAPTURE(cols);
    auto x = RandomData(size_t(rows * cols), uint32_t(rows * 31 + cols));
    const int64_t tc = (cols + 127) / 128, tr = (rows + 127) / 128;
    std::vector<float> want(x.size()), want_s(size_t(rows * tc));
    moerun::kernels::cpu::FakeQuantE4M3Tiles1x128(x.data(), want.data(), want_s.data(), rows, cols);
    DeviceBuffer in(x.size()), out(x.size()), s(want_s.size());
    Upload(in, x);
    CUDA_OK(moerun::kernels::cuda::LaunchFakeQuantE4M3Tiles1x128(in.ptr, out.ptr, s.ptr, rows, cols,
                                                                 nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(Mismatches(ToHost(out), want) == 0);
    CHECK(Mismatches(ToHost(s), want_s) == 0);

    std::vector<float> want_b(x.size()), want_bs(size_t(tr * tc));
    moerun::kernels::cpu::FakeQuantE4M3Blocks128x128(x.data(), want_b.data(), want_bs.data(), rows,
                                                     cols);
    DeviceBuffer out_b(x.size()), s_b(want_bs.size());
    CUDA_OK(moerun::kernels::cuda::LaunchFakeQuantE4M3Blocks128x128(in.ptr, out_b.ptr, s_b.ptr,
                                                                    rows, cols, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    CHECK(Mismatches(ToHost(out_b), want_b) == 0);
    CHECK(Mismatches(ToHost(s_b), want_bs) == 0);
  }
}
