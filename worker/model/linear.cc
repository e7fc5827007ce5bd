#include "worker/model/linear.h"

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <type_traits>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/precision.h"

namespace moerun::model {
namespace {

namespace cpu = kernels::cpu;

// Per-thread buffers that keep their pages between calls. A fresh std::vector per GEMM operand
// cost a memset and, above malloc's mmap threshold, page faults on every call: 18% of an fp8
// step under perf before these. One buffer per slot and element type; a slot is reused by the
// next linear layer, so an operand lives until its GEMM returns.
enum Slot : int {
  kX,        // the input: bf16 bits, rounded values, or E4M3 in 1x128 tiles
  kXScales,  // its 1x128 tile scales, chunk-major
  kXTokens,  // the input in 128x1 tiles along tokens (weight gradient)
  kXTokenScales,
  kW,  // the weight: bf16 bits, rounded values, or E4M3 in 128x128 blocks
  kWScales,
  kWChunkScales,  // its block scales spread per (chunk, column)
  kDy,            // the output gradient, as kX
  kDyScales,
  kDyTokens,
  kDyTokenScales,
  kTileScales,  // 1x128 tile scales as the quantizer writes them, [rows, tiles]
  kSlots
};

template <typename T>
T* Scratch(Slot slot, int64_t n) {
  struct Buffer {
    std::unique_ptr<T[]> data;
    int64_t capacity = 0;
  };
  thread_local std::array<Buffer, kSlots> buffers;
  Buffer& b = buffers[slot];
  if (b.capacity < n) {
    b.data.reset(new T[static_cast<size_t>(n)]);  // uninitialized: every value is written
    b.capacity = n;
  }
  return b.data.get();
}

// An fp8 operand of kernels/cpu/fp8_gemm.h: E4M3 values as bf16 bits, and scales.
struct E4M3Operand {
  const uint16_t* q;
  const float* scales;
};

// [rows, cols] in 1x128 tiles along cols (activations, output gradients), scales chunk-major
// ([tiles, rows]: the GEMM's per-chunk row scales).
E4M3Operand Tiles1x128(const float* x, int64_t rows, int64_t cols, Slot q_slot, Slot s_slot) {
  const int64_t tiles = (cols + 127) / 128;
  uint16_t* q = Scratch<uint16_t>(q_slot, rows * cols);
  float* scales = Scratch<float>(s_slot, rows * tiles);
  if (tiles == 1) {  // [rows, 1] is already chunk-major
    cpu::QuantE4M3Tiles1x128(x, q, scales, rows, cols);
  } else {
    float* by_row = Scratch<float>(kTileScales, rows * tiles);
    cpu::QuantE4M3Tiles1x128(x, q, by_row, rows, cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < tiles; ++t) scales[t * rows + r] = by_row[r * tiles + t];
  }
  return {q, scales};
}

// [rows, cols] in 128x1 tiles along rows (tokens): the weight gradient's operands. Its scales,
// [ceil(rows/128), cols], are already one row per chunk of the contraction over rows.
E4M3Operand Tiles128x1(const float* x, int64_t rows, int64_t cols, Slot q_slot, Slot s_slot) {
  uint16_t* q = Scratch<uint16_t>(q_slot, rows * cols);
  float* scales = Scratch<float>(s_slot, ((rows + 127) / 128) * cols);
  cpu::QuantE4M3Tiles128x1(x, q, scales, rows, cols);
  return {q, scales};
}

// A weight [rows, cols] in 128x128 blocks, its block scales spread to one per (chunk, column):
// along_rows: the GEMM contracts over the weight's rows (dx = dy·W), so chunk c is block row c
// and column j reads block column j/128; otherwise it contracts over cols (y = x·Wᵀ), chunk c
// is block column c and column j (a weight row) reads block row j/128.
E4M3Operand Blocks128x128(const float* w, int64_t rows, int64_t cols, bool along_rows) {
  const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  uint16_t* q = Scratch<uint16_t>(kW, rows * cols);
  float* blocks = Scratch<float>(kWScales, br * bc);
  cpu::QuantE4M3Blocks128x128(w, q, blocks, rows, cols);
  const int64_t chunks = along_rows ? br : bc, width = along_rows ? cols : rows;
  float* out = Scratch<float>(kWChunkScales, chunks * width);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < width; ++j)
      out[c * width + j] = along_rows ? blocks[c * bc + j / 128] : blocks[(j / 128) * bc + c];
  return {q, out};
}

// bf16 bits of [rows, cols] values (round to nearest even): a native bf16 GEMM's operand.
const uint16_t* Bf16(const float* x, int64_t count, Slot slot) {
  uint16_t* out = Scratch<uint16_t>(slot, count);
  cpu::ToBf16Bits(x, out, count);
  return out;
}

// The same values as fp32 (for CPUs where oneDNN has no bf16 product: the fp32 GEMM of rounded
// operands, the same math in another order).
const float* Bf16Rounded(const float* x, int64_t count, Slot slot) {
  float* out = Scratch<float>(slot, count);
  cpu::RoundToBf16(x, out, count);
  return out;
}

// x [n, in] in the forms the GEMMs of precision p read, each made on first use: linear layers
// that read one x (an MLP's gate and up projections) convert it once. Its forms live in the
// kX* slots, so one GemmInput exists per thread at a time.
class GemmInput {
 public:
  GemmInput(const float* x, int64_t n, int64_t in) : x_(x), n_(n), in_(in) {}
  const float* x() const { return x_; }
  const uint16_t* Bf16Bits() {
    if (bf16_ == nullptr) bf16_ = Bf16(x_, n_ * in_, kX);
    return bf16_;
  }
  const float* Bf16Values() {
    if (rounded_ == nullptr) rounded_ = Bf16Rounded(x_, n_ * in_, kX);
    return rounded_;
  }
  // 1x128 tiles along in (y = x·Wᵀ), scales chunk-major.
  const E4M3Operand& Fp8Features() {
    if (!features_) features_ = Tiles1x128(x_, n_, in_, kX, kXScales);
    return *features_;
  }
  // 128x1 tiles along tokens (dW = dyᵀ·x).
  const E4M3Operand& Fp8Tokens() {
    if (!tokens_) tokens_ = Tiles128x1(x_, n_, in_, kXTokens, kXTokenScales);
    return *tokens_;
  }

 private:
  const float* x_;
  int64_t n_, in_;
  const uint16_t* bf16_ = nullptr;
  const float* rounded_ = nullptr;
  std::optional<E4M3Operand> features_, tokens_;
};

void ForwardF32(GemmInput& x, const float* w, float* y, int64_t n, int64_t in, int64_t out,
                GemmPrecision p, bool accumulate_y) {
  const float beta = accumulate_y ? 1.0f : 0.0f;
  if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // bf16 products, fp32 sums
    const uint16_t* qw = Bf16(w, out * in, kW);
    cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, true, n, out, in, 1.0f, x.Bf16Bits(), in, qw, in,
                  beta, y, out);
  } else if (p == GemmPrecision::kBf16) {
    const float* qw = Bf16Rounded(w, out * in, kW);
    cpu::Gemm<float>(false, true, n, out, in, 1.0f, x.Bf16Values(), in, qw, in, beta, y, out);
  } else if (p == GemmPrecision::kFp8) {  // y = x·Wᵀ over chunks of `in`
    const E4M3Operand& qx = x.Fp8Features();
    const E4M3Operand qw = Blocks128x128(w, out, in, false);
    cpu::BlockScaledGemm(false, true, n, out, in, qx.q, in, qx.scales, qw.q, in, qw.scales,
                         accumulate_y, y, out);
  } else {
    cpu::Gemm<float>(false, true, n, out, in, 1.0f, x.x(), in, w, in, beta, y, out);
  }
}

void BackwardF32(const float* dy, GemmInput& x, const float* w, float* dx, float* dw, int64_t n,
                 int64_t in, int64_t out, bool accumulate_dx, GemmPrecision p) {
  const float beta_dx = accumulate_dx ? 1.0f : 0.0f;
  if (p == GemmPrecision::kBf16 && cpu::DnnlHasBf16()) {  // dx = dy·W, dW += dyᵀ·x in bf16
    const uint16_t* qdy = Bf16(dy, n * out, kDy);
    if (dx != nullptr) {
      const uint16_t* qw = Bf16(w, out * in, kW);
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, false, n, in, out, 1.0f, qdy, out, qw, in,
                    beta_dx, dx, in);
    }
    if (dw != nullptr && n > 0) {
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, true, false, out, in, n, 1.0f, qdy, out, x.Bf16Bits(),
                    in, 1.0f, dw, in);
    }
  } else if (p == GemmPrecision::kBf16) {
    const float* qdy = Bf16Rounded(dy, n * out, kDy);
    const float* qw = Bf16Rounded(w, out * in, kW);
    cpu::LinearBackward(qdy, x.Bf16Values(), qw, dx, dw, n, in, out, accumulate_dx);
  } else if (p == GemmPrecision::kFp8) {
    if (dx != nullptr) {
      // dx = dy · W contracts over `out`: dy in 1x128 tiles along out, W in 128x128 blocks.
      const E4M3Operand qdy = Tiles1x128(dy, n, out, kDy, kDyScales);
      const E4M3Operand qw = Blocks128x128(w, out, in, true);
      cpu::BlockScaledGemm(false, false, n, in, out, qdy.q, out, qdy.scales, qw.q, in, qw.scales,
                           accumulate_dx, dx, in);
    }
    if (dw != nullptr && n > 0) {
      // dW += dyᵀ · x contracts over tokens: both operands in 128x1 tiles along tokens.
      const E4M3Operand tdy = Tiles128x1(dy, n, out, kDyTokens, kDyTokenScales);
      const E4M3Operand& tx = x.Fp8Tokens();
      cpu::BlockScaledGemm(true, false, out, in, n, tdy.q, out, tdy.scales, tx.q, in, tx.scales,
                           true, dw, in);
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
