// bf16 rounding on the GPU against the CPU's emulation, bit for bit: the cast every bf16
// compute copy and activation goes through (LaunchCastFromFloat) is round-to-nearest-even,
// exactly kernels/cpu/precision.h's RoundToBf16. (The E4M3 twins are checked in
// test_fp8_cuda.cc against the CPU's FakeQuant.)
#include <cuda_bf16.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/precision.h"
#include "kernels/cuda/elementwise.cuh"
#include "tests/gpu/gpu_test_util.h"

using moerun::gpu_testing::DeviceArray;
using moerun::gpu_testing::ToFloats;

TEST_CASE("bf16 rounding: the GPU's cast equals the CPU's RoundToBf16 bit for bit") {
  const size_t n = 1 << 20;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-12.0f, 12.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng) * std::exp2(exponent(rng));  // many magnitudes
  std::vector<float> want(n);
  moerun::kernels::cpu::RoundToBf16(x.data(), want.data(), int64_t(n));
  DeviceArray<float> in(n);
  DeviceArray<__nv_bfloat16> out(n);
  in.Upload(x);
  CUDA_OK(moerun::kernels::cuda::LaunchCastFromFloat<__nv_bfloat16>(in.ptr, out.ptr, int64_t(n),
                                                                    nullptr));
  const auto got = ToFloats(out.Download());
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  CHECK(bad == 0);
}
