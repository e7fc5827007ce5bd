#include "worker/model/linear.h"

#include <cstddef>
#include <optional>
#include <type_traits>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/precision.h"

namespace moerun::model {
namespace {

namespace cpu = kernels::cpu;

// An fp8 operand of kernels/cpu/fp8_gemm.h: E4M3 values as bf16 bits, and scales.
struct E4M3Operand {
  std::vector<uint16_t> q;
  std::vector<float> scales;
};

// [rows, cols] in 1x128 tiles along cols (activations, output gradients).
E4M3Operand Tiles1x128(const float* x, int64_t rows, int64_t cols) {
  E4M3Operand o{std::vector<uint16_t>(static_cast<size_t>(rows * cols)),
                std::vector<float>(static_cast<size_t>(rows * ((cols + 127) / 128)))};
  cpu::QuantE4M3Tiles1x128(x, o.q.data(), o.scales.data(), rows, cols);
  return o;
}

// [rows, cols] in 128x1 tiles along rows (tokens): the weight gradient's operands. Its scales,
// [ceil(rows/128), cols], are already one row per chunk of the contraction over rows.
E4M3Operand Tiles128x1(const float* x, int64_t rows, int64_t cols) {
  E4M3Operand o{std::vector<uint16_t>(static_cast<size_t>(rows * cols)),
                std::vector<float>(static_cast<size_t>(((rows + 127) / 128) * cols))};
  cpu::QuantE4M3Tiles128x1(x, o.q.data(), o.scales.data(), rows, cols);
  return o;
}

// A weight [rows, cols] in 128x128 blocks.
E4M3Operand Blocks128x128(const float* w, int64_t rows, int64_t cols) {
  E4M3Operand o{
      std::vector<uint16_t>(static_cast<size_t>(rows * cols)),
      std::vector<float>(static_cast<size_t>(((rows + 127) / 128) * ((cols + 127) / 128)))};
  cpu::QuantE4M3Blocks128x128(w, o.q.data(), o.scales.data(), rows, cols);
  return o;
}

// 1x128 tile scales [rows, tiles] as the GEMM's per-chunk row scales [tiles, rows].
std::vector<float> ChunkMajor(const std::vector<float>& s, int64_t rows) {
  const int64_t tiles = rows == 0 ? 0 : int64_t(s.size()) / rows;
  std::vector<float> out(s.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < tiles; ++t) out[size_t(t * rows + r)] = s[size_t(r * tiles + t)];
  return out;
}

// A weight's block scales [ceil(rows/128), ceil(cols/128)] spread to one per (chunk, column):
// along_rows: the GEMM contracts over the weight's rows (dx = dy·W), so chunk c is block row c
// and column j reads block column j/128; otherwise it contracts over cols (y = x·Wᵀ), chunk c
// is block column c and column j (a weight row) reads block row j/128.
std::vector<float> WeightChunkScales(const std::vector<float>& s, int64_t rows, int64_t cols,
                                     bool along_rows) {
  const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  const int64_t chunks = along_rows ? br : bc, width = along_rows ? cols : rows;
  std::vector<float> out(static_cast<size_t>(chunks * width));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < width; ++j)
      out[size_t(c * width + j)] =
          along_rows ? s[size_t(c * bc + j / 128)] : s[size_t((j / 128) * bc + c)];
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

// x [n, in] in the forms the GEMMs of precision p read, each made on first use: linear layers
// that read one x (an MLP's gate and up projections) convert it once.
class GemmInput {
 public:
  GemmInput(const float* x, int64_t n, int64_t in) : x_(x), n_(n), in_(in) {}
  const float* x() const { return x_; }
  const std::vector<uint16_t>& Bf16Bits() {
    if (bf16_.empty() && n_ * in_ > 0) bf16_ = Bf16(x_, n_ * in_);
    return bf16_;
  }
  const std::vector<float>& Bf16Values() {
    if (rounded_.empty() && n_ * in_ > 0) rounded_ = Bf16Rounded(x_, n_ * in_);
    return rounded_;
  }
  // 1x128 tiles along in (y = x·Wᵀ), scales chunk-major.
  const E4M3Operand& Fp8Features() {
    if (!features_) {
      features_ = Tiles1x128(x_, n_, in_);
      features_->scales = ChunkMajor(features_->scales, n_);
    }
    return *features_;
  }
  // 128x1 tiles along tokens (dW = dyᵀ·x).
  const E4M3Operand& Fp8Tokens() {
    if (!tokens_) tokens_ = Tiles128x1(x_, n_, in_);
    return *tokens_;
  }

 private:
  const float* x_;
  int64_t n_, in_;
  std::vector<uint16_t> bf16_;
  std::vector<float> rounded_;
  std::optional<E4M3Operand> features_, tokens_;
};

void ForwardF32(GemmInput& x, const float* w, float* y, int64_t n, int64_t in, int64_t out,
                GemmPrecision p, bool accumulate_y) {
  const float beta = accumulate_y ? 1.0f : 0.0f;
  if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // bf16 products, fp32 sums
    const auto qw = Bf16(w, out * in);
    cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, true, n, out, in, 1.0f, x.Bf16Bits().data(), in,
                  qw.data(), in, beta, y, out);
  } else if (p == GemmPrecision::kBf16) {
    const auto qw = Bf16Rounded(w, out * in);
    cpu::Gemm<float>(false, true, n, out, in, 1.0f, x.Bf16Values().data(), in, qw.data(), in, beta,
                     y, out);
  } else if (p == GemmPrecision::kFp8) {  // y = x·Wᵀ over chunks of `in`
    const auto& qx = x.Fp8Features();
    const auto qw = Blocks128x128(w, out, in);
    cpu::BlockScaledGemm(false, true, n, out, in, qx.q.data(), in, qx.scales.data(), qw.q.data(),
                         in, WeightChunkScales(qw.scales, out, in, false).data(), accumulate_y, y,
                         out);
  } else {
    cpu::Gemm<float>(false, true, n, out, in, 1.0f, x.x(), in, w, in, beta, y, out);
  }
}

void BackwardF32(const float* dy, GemmInput& x, const float* w, float* dx, float* dw, int64_t n,
                 int64_t in, int64_t out, bool accumulate_dx, GemmPrecision p) {
  const float beta_dx = accumulate_dx ? 1.0f : 0.0f;
  if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // dx = dy·W, dW += dyᵀ·x in bf16
    const auto qdy = Bf16(dy, n * out);
    if (dx != nullptr) {
      const auto qw = Bf16(w, out * in);
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, false, n, in, out, 1.0f, qdy.data(), out,
                    qw.data(), in, beta_dx, dx, in);
    }
    if (dw != nullptr && n > 0) {
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, true, false, out, in, n, 1.0f, qdy.data(), out,
                    x.Bf16Bits().data(), in, 1.0f, dw, in);
    }
  } else if (p == GemmPrecision::kBf16) {
    const auto qdy = Bf16Rounded(dy, n * out), qw = Bf16Rounded(w, out * in);
    cpu::LinearBackward(qdy.data(), x.Bf16Values().data(), qw.data(), dx, dw, n, in, out,
                        accumulate_dx);
  } else if (p == GemmPrecision::kFp8) {
    if (dx != nullptr) {
      // dx = dy · W contracts over `out`: dy in 1x128 tiles along out, W in 128x128 blocks.
      const auto qdy = Tiles1x128(dy, n, out);
      const auto qw = Blocks128x128(w, out, in);
      cpu::BlockScaledGemm(false, false, n, in, out, qdy.q.data(), out,
                           ChunkMajor(qdy.scales, n).data(), qw.q.data(), in,
                           WeightChunkScales(qw.scales, out, in, true).data(), accumulate_dx, dx,
                           in);
    }
    if (dw != nullptr && n > 0) {
      // dW += dyᵀ · x contracts over tokens: both operands in 128x1 tiles along tokens.
      const auto tdy = Tiles128x1(dy, n, out);
      const auto& tx = x.Fp8Tokens();
      cpu::BlockScaledGemm(true, false, out, in, n, tdy.q.data(), out, tdy.scales.data(),
                           tx.q.data(), in, tx.scales.data(), true, dw, in);
    }
  } else {
    cpu::LinearBackward(dy, x.x(), w, dx, dw, n, in, out, accumulate_dx);
  }
}

}  // namespace

template <typename T>
void LinearForwardP(const T* x, const T* w, T* y, int64_t n, int64_t in, int64_t out,
                    GemmPrecision p, bool accumulate_y) {
  if constexpr (std::is_same_v<T, float>) {
    GemmInput gx(x, n, in);
    ForwardF32(gx, w, y, n, in, out, p, accumulate_y);
  } else {
    cpu::Gemm<T>(false, true, n, out, in, T(1), x, in, w, in, accumulate_y ? T(1) : T(0), y, out);
  }
}

template <typename T>
void LinearBackwardP(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t n, int64_t in,
                     int64_t out, bool accumulate_dx, GemmPrecision p) {
  if constexpr (std::is_same_v<T, float>) {
    GemmInput gx(x, n, in);
    BackwardF32(dy, gx, w, dx, dw, n, in, out, accumulate_dx, p);
  } else {
    cpu::LinearBackward(dy, x, w, dx, dw, n, in, out, accumulate_dx);
  }
}

template <typename T>
void LinearForwardPair(const T* x, const T* wa, const T* wb, T* ya, T* yb, int64_t n, int64_t in,
                       int64_t out, GemmPrecision p) {
  if constexpr (std::is_same_v<T, float>) {
    GemmInput gx(x, n, in);
    ForwardF32(gx, wa, ya, n, in, out, p, false);
    ForwardF32(gx, wb, yb, n, in, out, p, false);
  } else {
    LinearForwardP(x, wa, ya, n, in, out, p);
    LinearForwardP(x, wb, yb, n, in, out, p);
  }
}

template <typename T>
void LinearBackwardPair(const T* dya, const T* dyb, const T* x, const T* wa, const T* wb, T* dx,
                        T* dwa, T* dwb, int64_t n, int64_t in, int64_t out, bool accumulate_dx,
                        GemmPrecision p) {
  if constexpr (std::is_same_v<T, float>) {
    GemmInput gx(x, n, in);
    BackwardF32(dya, gx, wa, dx, dwa, n, in, out, accumulate_dx, p);
    BackwardF32(dyb, gx, wb, dx, dwb, n, in, out, true, p);
  } else {
    LinearBackwardP(dya, x, wa, dx, dwa, n, in, out, accumulate_dx, p);
    LinearBackwardP(dyb, x, wb, dx, dwb, n, in, out, true, p);
  }
}

template void LinearForwardP<float>(const float*, const float*, float*, int64_t, int64_t, int64_t,
                                    GemmPrecision, bool);
template void LinearForwardP<double>(const double*, const double*, double*, int64_t, int64_t,
                                     int64_t, GemmPrecision, bool);
template void LinearBackwardP<float>(const float*, const float*, const float*, float*, float*,
                                     int64_t, int64_t, int64_t, bool, GemmPrecision);
template void LinearBackwardP<double>(const double*, const double*, const double*, double*, double*,
                                      int64_t, int64_t, int64_t, bool, GemmPrecision);
#define MOERUN_INSTANTIATE_PAIR(T)                                                              \
  template void LinearForwardPair<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                     int64_t, GemmPrecision);                                   \
  template void LinearBackwardPair<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, \
                                      T*, int64_t, int64_t, int64_t, bool, GemmPrecision);
MOERUN_INSTANTIATE_PAIR(float)
MOERUN_INSTANTIATE_PAIR(double)
#undef MOERUN_INSTANTIATE_PAIR

}  // namespace moerun::model
