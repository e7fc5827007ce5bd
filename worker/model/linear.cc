#include "worker/model/linear.h"

#include <cstddef>
#include <type_traits>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/precision.h"

namespace moerun::model {
namespace {

namespace cpu = kernels::cpu;

// Activations [rows, cols] as E4M3 values with 1x128 tiles along cols.
std::vector<float> QuantizeActivations(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows * ((cols + 127) / 128)));
  cpu::FakeQuantE4M3Tiles1x128(x, out.data(), scales.data(), rows, cols);
  return out;
}

// Weights [rows, cols] as E4M3 values with 128x128 blocks.
std::vector<float> QuantizeWeights(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(((rows + 127) / 128) * ((cols + 127) / 128)));
  cpu::FakeQuantE4M3Blocks128x128(w, out.data(), scales.data(), rows, cols);
  return out;
}

// bf16 bits of [rows, cols] values (round to nearest even): a native bf16 GEMM's operand.
std::vector<uint16_t> Bf16(const float* x, int64_t count) {
  std::vector<uint16_t> out(static_cast<size_t>(count));
  cpu::ToBf16Bits(x, out.data(), count);
  return out;
}

// The same values as fp32 (for CPUs where oneDNN has no bf16 product: the fp32 GEMM of rounded
// operands, the same math in another order).
std::vector<float> Bf16Rounded(const float* x, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  cpu::RoundToBf16(x, out.data(), count);
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
    if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // bf16 products, fp32 sums
      const auto qx = Bf16(x, n * in), qw = Bf16(w, out * in);
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, true, n, out, in, 1.0f, qx.data(), in,
                    qw.data(), in, beta, y, out);
      return;
    }
    if (p == GemmPrecision::kBf16) {
      const auto qx = Bf16Rounded(x, n * in), qw = Bf16Rounded(w, out * in);
      cpu::Gemm<float>(false, true, n, out, in, 1.0f, qx.data(), in, qw.data(), in, beta, y, out);
      return;
    }
    if (p == GemmPrecision::kFp8) {
      const auto qx = QuantizeActivations(x, n, in);
      const auto qw = QuantizeWeights(w, out, in);
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
    if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // dx = dy·W, dW += dyᵀ·x in bf16
      const auto qdy = Bf16(dy, n * out);
      if (dx != nullptr) {
        const auto qw = Bf16(w, out * in);
        cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, false, n, in, out, 1.0f, qdy.data(), out,
                      qw.data(), in, accumulate_dx ? 1.0f : 0.0f, dx, in);
      }
      if (dw != nullptr && n > 0) {
        const auto qx = Bf16(x, n * in);
        cpu::DnnlGemm(cpu::GemmOperands::kBf16, true, false, out, in, n, 1.0f, qdy.data(), out,
                      qx.data(), in, 1.0f, dw, in);
      }
      return;
    }
    if (p == GemmPrecision::kBf16) {
      const auto qdy = Bf16Rounded(dy, n * out), qx = Bf16Rounded(x, n * in),
                 qw = Bf16Rounded(w, out * in);
      cpu::LinearBackward(qdy.data(), qx.data(), qw.data(), dx, dw, n, in, out, accumulate_dx);
      return;
    }
    if (p == GemmPrecision::kFp8) {
      // dx = dy · W contracts over `out`: dy in 1x128 tiles along out, W in 128x128 blocks.
      const auto qdy = QuantizeActivations(dy, n, out);
      const auto qw = QuantizeWeights(w, out, in);
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
