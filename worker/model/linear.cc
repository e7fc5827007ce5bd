#include "worker/model/linear.h"

#include <cstddef>
#include <type_traits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/precision.h"

namespace moerun::model {
namespace {

namespace cpu = kernels::cpu;

// Activations [rows, cols]: bf16-rounded, or E4M3 with 1x128 tiles along cols.
std::vector<float> QuantizeActivations(const float* x, int64_t rows, int64_t cols,
                                       GemmPrecision p) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  if (p == GemmPrecision::kBf16) {
    cpu::RoundToBf16(x, out.data(), rows * cols);
  } else {
    std::vector<float> scales(static_cast<size_t>(rows * ((cols + 127) / 128)));
    cpu::FakeQuantE4M3Tiles1x128(x, out.data(), scales.data(), rows, cols);
  }
  return out;
}

// Weights [rows, cols]: bf16-rounded, or E4M3 with 128x128 blocks.
std::vector<float> QuantizeWeights(const float* w, int64_t rows, int64_t cols, GemmPrecision p) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  if (p == GemmPrecision::kBf16) {
    cpu::RoundToBf16(w, out.data(), rows * cols);
  } else {
    std::vector<float> scales(static_cast<size_t>(((rows + 127) / 128) * ((cols + 127) / 128)));
    cpu::FakeQuantE4M3Blocks128x128(w, out.data(), scales.data(), rows, cols);
  }
  return out;
}

// E4M3 in 128x1 tiles along the token dimension (rows) of [rows, cols].
std::vector<float> QuantizeAlongTokens(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(((rows + 127) / 128) * cols));
  cpu::FakeQuantE4M3Tiles128x1(x, out.data(), scales.data(), rows, cols);
  return out;
}

}  // namespace

template <typename T>
void LinearForwardP(const T* x, const T* w, T* y, int64_t n, int64_t in, int64_t out,
                    GemmPrecision p, bool accumulate_y) {
  const T beta = accumulate_y ? T(1) : T(0);
  if constexpr (std::is_same_v<T, float>) {
    if (p != GemmPrecision::kFp32) {
      const auto qx = QuantizeActivations(x, n, in, p);
      const auto qw = QuantizeWeights(w, out, in, p);
      cpu::Gemm<float>(false, true, n, out, in, 1.0f, qx.data(), in, qw.data(), in, beta, y, out);
      return;
    }
  }
  cpu::Gemm<T>(false, true, n, out, in, T(1), x, in, w, in, beta, y, out);
}

template <typename T>
void LinearBackwardP(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t n, int64_t in,
                     int64_t out, bool accumulate_dx, GemmPrecision p) {
  if constexpr (std::is_same_v<T, float>) {
    if (p == GemmPrecision::kBf16) {
      const auto qdy = QuantizeActivations(dy, n, out, p);
      const auto qx = QuantizeActivations(x, n, in, p);
      const auto qw = QuantizeWeights(w, out, in, p);
      cpu::LinearBackward(qdy.data(), qx.data(), qw.data(), dx, dw, n, in, out, accumulate_dx);
      return;
    }
    if (p == GemmPrecision::kFp8) {
      // dx = dy · W contracts over `out`: dy in 1x128 tiles along out, W in 128x128 blocks.
      const auto qdy = QuantizeActivations(dy, n, out, p);
      const auto qw = QuantizeWeights(w, out, in, p);
      cpu::Gemm<float>(false, false, n, in, out, 1.0f, qdy.data(), out, qw.data(), in,
                       accumulate_dx ? 1.0f : 0.0f, dx, in);
      // dW += dyᵀ · x contracts over tokens: both operands in 128x1 tiles along tokens.
      const auto tdy = QuantizeAlongTokens(dy, n, out);
      const auto tx = QuantizeAlongTokens(x, n, in);
      cpu::Gemm<float>(true, false, out, in, n, 1.0f, tdy.data(), out, tx.data(), in, 1.0f, dw, in);
      return;
    }
  }
  cpu::LinearBackward(dy, x, w, dx, dw, n, in, out, accumulate_dx);
}

template void LinearForwardP<float>(const float*, const float*, float*, int64_t, int64_t, int64_t,
                                    GemmPrecision, bool);
template void LinearForwardP<double>(const double*, const double*, double*, int64_t, int64_t,
                                     int64_t, GemmPrecision, bool);
template void LinearBackwardP<float>(const float*, const float*, const float*, float*, float*,
                                     int64_t, int64_t, int64_t, bool, GemmPrecision);
template void LinearBackwardP<double>(const double*, const double*, const double*, double*, double*,
                                      int64_t, int64_t, int64_t, bool, GemmPrecision);

}  // namespace moerun::model
