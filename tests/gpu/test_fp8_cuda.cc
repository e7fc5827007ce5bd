// DeepSeek-V3's fp8 recipe on the GPU against its CPU twin: the E4M3 quantization kernels
// (real fp8 storage, cuBLASLt scale layouts) dequantize to exactly the CPU's FakeQuant
// values, and the block-scaled cuBLASLt GEMMs (forward, dgrad, wgrad) match the CPU's fp8
// linear layer (worker/model/linear.h: fp32 GEMMs of the fake-quantized operands).
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "kernels/cpu/precision.h"
#include "kernels/cuda/fp8_gemm.cuh"
#include "kernels/cuda/fp8_quantize.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "worker/model/cuda/fp8_linear.h"
#include "worker/model/linear.h"

namespace cpu = moerun::kernels::cpu;
namespace cuda = moerun::kernels::cuda;
using moerun::gpu_testing::DeviceArray;
using moerun::gpu_testing::FromFloats;
using moerun::gpu_testing::MaxRelError;
using moerun::gpu_testing::Normal;
using moerun::gpu_testing::Record;
using moerun::gpu_testing::TimeMs;
using moerun::gpu_testing::ToFloats;
using E4M3 = __nv_fp8_e4m3;

namespace {

size_t BitMismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return bad;
}

// Values spread over many magnitudes, so that tiles get very different scales.
std::vector<float> Spread(size_t n, uint32_t seed) {
  auto v = Normal(n, seed);
  for (size_t i = 0; i < n; ++i) v[i] *= std::exp2(float(int(i / 97 % 17) - 8));
  return v;
}

// The 1x128 tile scales of the CPU ([rows, bands]) in cuBLASLt's band-major layout.
std::vector<float> BandMajor(const std::vector<float>& s, int64_t rows, int64_t bands) {
  std::vector<float> out(s.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < bands; ++b) out[size_t(b * rows + r)] = s[size_t(r * bands + b)];
  return out;
}

// A [rows, cols] fp8 tensor times its per-element scale, as floats.
template <typename ScaleAt>
std::vector<float> Dequantize(const std::vector<E4M3>& q, const std::vector<float>& s, int64_t rows,
                              int64_t cols, ScaleAt scale_at) {
  std::vector<float> out(q.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[size_t(r * cols + c)] = float(q[size_t(r * cols + c)]) * s[scale_at(r, c)];
  return out;
}

template <typename T>
void QuantizersMatchCpu(int64_t rows, int64_t cols) {
  CAPTURE(rows);
  CAPTURE(cols);
  const char* prec = std::is_same_v<T, float> ? "fp32" : "bf16";
  CAPTURE(prec);
  // The CPU twin sees what the kernel reads: bf16-rounded values for bf16 input.
  auto spread = Spread(size_t(rows * cols), uint32_t(rows + cols));
  if (rows > 3 && cols >= 128)
    std::fill_n(spread.begin() + 3 * cols, 128, 0.0f);  // an all-zero tile: scale 1
  const auto x = ToFloats(FromFloats<T>(spread));
  DeviceArray<T> d_x(x.size());
  d_x.Upload(FromFloats<T>(x));
  const int64_t bc = cuda::Fp8Bands(cols), br = cuda::Fp8Bands(rows);

  // 1x128 tiles.
  std::vector<float> want(x.size()), want_s(size_t(rows * bc));
  cpu::FakeQuantE4M3Tiles1x128(x.data(), want.data(), want_s.data(), rows, cols);
  DeviceArray<E4M3> q(x.size());
  DeviceArray<float> s(size_t(cuda::Tiles1x128ScaleCount(rows, cols)));
  const double ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles1x128<T>(d_x.ptr, rows, cols, q.ptr, s.ptr, nullptr));
  });
  const auto got_s = s.Download();
  CHECK(BitMismatches(got_s, BandMajor(want_s, rows, bc)) == 0);
  const auto got = Dequantize(q.Download(), got_s, rows, cols,
                              [&](int64_t r, int64_t c) { return size_t(c / 128 * rows + r); });
  CHECK(BitMismatches(got, want) == 0);
  Record({"fp8 quantize 1x128", prec, MaxRelError(got, want), 0, ms,
          double(rows * cols) * (sizeof(T) + 1), 0});

  // 128x1 tiles, written transposed.
  std::vector<float> want_t(x.size()), want_ts(size_t(br * cols));
  cpu::FakeQuantE4M3Tiles128x1(x.data(), want_t.data(), want_ts.data(), rows, cols);
  DeviceArray<E4M3> qt(x.size());
  DeviceArray<float> st(size_t(cuda::Tiles128x1ScaleCount(rows, cols)));
  const double ms_t = TimeMs([&] {
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles128x1Transposed<T>(d_x.ptr, rows, cols, qt.ptr, st.ptr,
                                                            nullptr));
  });
  const auto got_ts = st.Download();
  CHECK(BitMismatches(got_ts, want_ts) == 0);
  // qt is [cols, rows]: element (c, r) scaled by band r/128 of column c.
  const auto got_tt = Dequantize(qt.Download(), got_ts, cols, rows,
                                 [&](int64_t c, int64_t r) { return size_t(r / 128 * cols + c); });
  std::vector<float> got_t(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) got_t[size_t(r * cols + c)] = got_tt[size_t(c * rows + r)];
  CHECK(BitMismatches(got_t, want_t) == 0);
  Record({"fp8 quantize 128x1 transposed", prec, MaxRelError(got_t, want_t), 0, ms_t,
          double(rows * cols) * (sizeof(T) + 1), 0});

  // 128x128 blocks, with the transposed copy.
  std::vector<float> want_b(x.size()), want_bs(size_t(br * bc));
  cpu::FakeQuantE4M3Blocks128x128(x.data(), want_b.data(), want_bs.data(), rows, cols);
  DeviceArray<E4M3> qb(x.size()), qbt(x.size());
  DeviceArray<float> sb(size_t(cuda::Blocks128ScaleCount(rows, cols))),
      sbt(size_t(cuda::Blocks128ScaleCount(cols, rows)));
  const double ms_b = TimeMs([&] {
    CUDA_OK(cuda::LaunchQuantizeE4M3Blocks128x128<T>(d_x.ptr, rows, cols, qb.ptr, sb.ptr, qbt.ptr,
                                                     sbt.ptr, nullptr));
  });
  const auto got_bs = sb.Download(), got_bts = sbt.Download();
  const int64_t ld = cuda::Blocks128Stride(cols), ld_t = cuda::Blocks128Stride(rows);
  for (int64_t i = 0; i < br; ++i) {
    for (int64_t j = 0; j < bc; ++j) {
      CHECK(got_bs[size_t(i * ld + j)] == want_bs[size_t(i * bc + j)]);
      CHECK(got_bts[size_t(j * ld_t + i)] == want_bs[size_t(i * bc + j)]);
    }
  }
  const auto got_b = Dequantize(qb.Download(), got_bs, rows, cols, [&](int64_t r, int64_t c) {
    return size_t(r / 128 * ld + c / 128);
  });
  CHECK(BitMismatches(got_b, want_b) == 0);
  const auto qbt_host = qbt.Download(), qb_host = qb.Download();
  size_t transposed_bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      transposed_bad += qbt_host[size_t(c * rows + r)].__x != qb_host[size_t(r * cols + c)].__x;
  CHECK(transposed_bad == 0);
  Record({"fp8 quantize 128x128 (+T)", prec, MaxRelError(got_b, want_b), 0, ms_b,
          double(rows * cols) * (sizeof(T) + 2), 0});
}

}  // namespace

TEST_CASE("E4M3 quantization into fp8 storage equals the CPU's FakeQuant bit for bit") {
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{1, 1}, {7, 300}, {256, 512}, {129, 1000}, {4096, 7168}}) {
    QuantizersMatchCpu<float>(rows, cols);
    QuantizersMatchCpu<__nv_bfloat16>(rows, cols);
  }
}

TEST_CASE("block-scaled fp8 GEMMs (cuBLASLt) match the CPU's fp8 linear layer") {
  if (!moerun::gpu_testing::IsHopper()) {  // 1x128 / 128x128 scale modes exist there only
    MESSAGE("skipped: block-scaled fp8 GEMMs need a Hopper GPU (sm_90)");
    return;
  }
  cublasLtHandle_t lt;
  REQUIRE(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  const size_t workspace_bytes = size_t(32) << 20;
  DeviceArray<char> workspace(workspace_bytes);
  cuda::Fp8Gemm gemm(lt, workspace.ptr, workspace_bytes);
  // {tokens, in, out}: aligned, ragged 128-bands in every dimension (each a multiple of 16, as
  // cuBLASLt requires of fp8 contraction dimensions), and a DeepSeek-sized one.
  for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{256, 512, 384},
                            {208, 336, 272},
                            {2048, 7168, 2048}}) {
    CAPTURE(n);
    CAPTURE(in);
    CAPTURE(out);
    // Magnitudes that change every 97 values, so that every tile and block has its own
    // scale and a misread one shows.
    auto x = Spread(size_t(n * in), 1), w = Spread(size_t(out * in), 2),
         dy = Spread(size_t(n * out), 3);
    for (auto& v : w) v *= 0.05f;
    for (auto& v : dy) v *= 1e-3f;
    // The CPU twin: fp32 GEMMs of the fake-quantized operands.
    using moerun::model::GemmPrecision;
    std::vector<float> want_y(size_t(n * out)), want_dx(x.size()), want_dw(w.size(), 0.0f);
    moerun::model::LinearForwardP(x.data(), w.data(), want_y.data(), n, in, out,
                                  GemmPrecision::kFp8);
    moerun::model::LinearBackwardP(dy.data(), x.data(), w.data(), want_dx.data(), want_dw.data(), n,
                                   in, out, false, GemmPrecision::kFp8);

    DeviceArray<float> d_x(x.size()), d_w(w.size()), d_dy(dy.size());
    d_x.Upload(x);
    d_w.Upload(w);
    d_dy.Upload(dy);
    DeviceArray<E4M3> qx(x.size()), qw(w.size()), qwt(w.size()), qdy(dy.size()), tx(x.size()),
        tdy(dy.size());
    DeviceArray<float> sx(size_t(cuda::Tiles1x128ScaleCount(n, in))),
        sw(size_t(cuda::Blocks128ScaleCount(out, in))),
        swt(size_t(cuda::Blocks128ScaleCount(in, out))),
        sdy(size_t(cuda::Tiles1x128ScaleCount(n, out))),
        stx(size_t(cuda::Tiles128x1ScaleCount(n, in))),
        stdy(size_t(cuda::Tiles128x1ScaleCount(n, out)));
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles1x128<float>(d_x.ptr, n, in, qx.ptr, sx.ptr, nullptr));
    CUDA_OK(cuda::LaunchQuantizeE4M3Blocks128x128<float>(d_w.ptr, out, in, qw.ptr, sw.ptr, qwt.ptr,
                                                         swt.ptr, nullptr));
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles1x128<float>(d_dy.ptr, n, out, qdy.ptr, sdy.ptr, nullptr));
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles128x1Transposed<float>(d_x.ptr, n, in, tx.ptr, stx.ptr,
                                                                nullptr));
    CUDA_OK(cuda::LaunchQuantizeE4M3Tiles128x1Transposed<float>(d_dy.ptr, n, out, tdy.ptr, stdy.ptr,
                                                                nullptr));
    const cuda::Fp8Scaling tiles = cuda::Fp8Scaling::kTiles1x128,
                           blocks = cuda::Fp8Scaling::kBlocks128x128;
    DeviceArray<float> y(want_y.size()), dx(want_dx.size()), dw(want_dw.size());
    CUDA_OK(cudaMemset(dw.ptr, 0, dw.n * sizeof(float)));
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    // y = x · Wᵀ;  dx = dy · W (W's transposed copy);  dW += dyᵀ · x (128x1 operands).
    const double fwd_ms = TimeMs([&] {
      st = gemm.Run<float>(n, out, in, {qx.ptr, sx.ptr, tiles}, {qw.ptr, sw.ptr, blocks}, false,
                           y.ptr, nullptr);
    });
    REQUIRE(st == CUBLAS_STATUS_SUCCESS);
    const double dgrad_ms = TimeMs([&] {
      st = gemm.Run<float>(n, in, out, {qdy.ptr, sdy.ptr, tiles}, {qwt.ptr, swt.ptr, blocks}, false,
                           dx.ptr, nullptr);
    });
    REQUIRE(st == CUBLAS_STATUS_SUCCESS);
    st = gemm.Run<float>(out, in, n, {tdy.ptr, stdy.ptr, tiles}, {tx.ptr, stx.ptr, tiles}, true,
                         dw.ptr, nullptr);
    REQUIRE(st == CUBLAS_STATUS_SUCCESS);
    const double flops = 2.0 * double(n) * double(in) * double(out);
    // fp32 accumulation on both sides; the bound leaves room for the tensor cores' order of
    // summation, while a wrong scale layout or operand would be off by O(1).
    const double bound = 2e-3;
    const double ey = MaxRelError(y.Download(), want_y), edx = MaxRelError(dx.Download(), want_dx),
                 edw = MaxRelError(dw.Download(), want_dw);
    CHECK(ey <= bound);
    CHECK(edx <= bound);
    CHECK(edw <= bound);
    const std::string shape =
        std::to_string(n) + "x" + std::to_string(in) + "x" + std::to_string(out);
    Record({"fp8 gemm fwd " + shape, "fp8", ey, bound, fwd_ms, 0, flops});
    Record({"fp8 gemm dgrad " + shape, "fp8", edx, bound, dgrad_ms, 0, flops});
    Record({"fp8 gemm wgrad (+=) " + shape, "fp8", edw, bound, 0, 0, 0});
    // bf16 output (what the model stores), then accumulated in place: y + y.
    DeviceArray<__nv_bfloat16> yb(want_y.size());
    REQUIRE(gemm.Run<__nv_bfloat16>(n, out, in, {qx.ptr, sx.ptr, tiles}, {qw.ptr, sw.ptr, blocks},
                                    false, yb.ptr, nullptr) == CUBLAS_STATUS_SUCCESS);
    const double eyb = MaxRelError(ToFloats(yb.Download()), want_y);
    CHECK(eyb <= 1e-2);
    Record({"fp8 gemm fwd -> bf16 " + shape, "fp8", eyb, 1e-2, 0, 0, 0});
    REQUIRE(gemm.Run<__nv_bfloat16>(n, out, in, {qx.ptr, sx.ptr, tiles}, {qw.ptr, sw.ptr, blocks},
                                    true, yb.ptr, nullptr) == CUBLAS_STATUS_SUCCESS);
    auto twice_y = want_y;
    for (auto& v : twice_y) v *= 2.0f;
    CHECK(MaxRelError(ToFloats(yb.Download()), twice_y) <= 1e-2);
    // The wgrad accumulates: a second call doubles it.
    REQUIRE(gemm.Run<float>(out, in, n, {tdy.ptr, stdy.ptr, tiles}, {tx.ptr, stx.ptr, tiles}, true,
                            dw.ptr, nullptr) == CUBLAS_STATUS_SUCCESS);
    auto twice = want_dw;
    for (auto& v : twice) v *= 2.0f;
    CHECK(MaxRelError(dw.Download(), twice) <= bound);
  }
  // A shape cuBLASLt's fp8 kernels cannot take is refused, not run; an empty sum is zero.
  DeviceArray<float> c(16);
  CHECK(gemm.Run<float>(4, 4, 10, {}, {}, false, c.ptr, nullptr) == CUBLAS_STATUS_NOT_SUPPORTED);
  c.Upload(std::vector<float>(16, 7.0f));
  CHECK(gemm.Run<float>(4, 4, 0, {}, {}, true, c.ptr, nullptr) == CUBLAS_STATUS_SUCCESS);
  CHECK(c.Download() == std::vector<float>(16, 7.0f));
  CHECK(gemm.Run<float>(4, 4, 0, {}, {}, false, c.ptr, nullptr) == CUBLAS_STATUS_SUCCESS);
  CHECK(c.Download() == std::vector<float>(16, 0.0f));
  cublasLtDestroy(lt);
}

TEST_CASE("Fp8Linear: padded token counts give the CPU's fp8 linear layer") {
  if (!moerun::gpu_testing::IsHopper()) {  // 1x128 / 128x128 scale modes exist there only
    MESSAGE("skipped: block-scaled fp8 GEMMs need a Hopper GPU (sm_90)");
    return;
  }
  using bf16 = __nv_bfloat16;
  using moerun::model::GemmPrecision;
  using moerun::model::cuda::Fp8Linear;
  using moerun::model::cuda::RoundUp16;
  auto f = Fp8Linear::Create(512, 512, nullptr);
  REQUIRE_MESSAGE(f.ok(), f.status().message());
  for (int64_t n : {int64_t(1), int64_t(37), int64_t(200), int64_t(256)}) {
    CAPTURE(n);
    const int64_t in = 336, out = 272;
    // The CPU twin sees the bf16 values the GPU layer reads.
    const auto x = ToFloats(FromFloats<bf16>(Spread(size_t(n * in), 4)));
    auto wf = Spread(size_t(out * in), 5);
    for (auto& v : wf) v *= 0.05f;
    const auto w = ToFloats(FromFloats<bf16>(wf));
    auto dyf = Spread(size_t(n * out), 6);
    for (auto& v : dyf) v *= 1e-3f;
    const auto dy = ToFloats(FromFloats<bf16>(dyf));
    std::vector<float> want_y(size_t(n * out)), want_dx(x.size()), want_dw(w.size(), 0.0f);
    moerun::model::LinearForwardP(x.data(), w.data(), want_y.data(), n, in, out,
                                  GemmPrecision::kFp8);
    moerun::model::LinearBackwardP(dy.data(), x.data(), w.data(), want_dx.data(), want_dw.data(), n,
                                   in, out, false, GemmPrecision::kFp8);
    DeviceArray<bf16> d_x(x.size()), d_w(w.size()), d_dy(dy.size());
    d_x.Upload(FromFloats<bf16>(x));
    d_w.Upload(FromFloats<bf16>(w));
    d_dy.Upload(FromFloats<bf16>(dy));
    // Outputs with room for the padded rows, which must come back zero.
    DeviceArray<bf16> y(size_t(RoundUp16(n) * out)), dx(size_t(RoundUp16(n) * in));
    DeviceArray<float> dw(w.size());
    CUDA_OK(cudaMemset(dw.ptr, 0, dw.n * sizeof(float)));
    auto weight = f.value()->NewWeight(out, in);
    REQUIRE(weight.ok());
    REQUIRE(f.value()->Quantize(d_w.ptr, weight.value()).ok());
    REQUIRE(f.value()->Forward(d_x.ptr, weight.value(), y.ptr, n).ok());
    REQUIRE(f.value()->Backward(d_dy.ptr, d_x.ptr, weight.value(), dx.ptr, dw.ptr, n, false).ok());
    auto got_y = ToFloats(y.Download()), got_dx = ToFloats(dx.Download());
    for (size_t i = size_t(n * out); i < got_y.size(); ++i) CHECK(got_y[i] == 0.0f);
    for (size_t i = size_t(n * in); i < got_dx.size(); ++i) CHECK(got_dx[i] == 0.0f);
    got_y.resize(want_y.size());
    got_dx.resize(want_dx.size());
    // bf16 outputs: their rounding on top of the GEMMs' summation order.
    CHECK(MaxRelError(got_y, want_y) <= 1e-2);
    CHECK(MaxRelError(got_dx, want_dx) <= 1e-2);
    CHECK(MaxRelError(dw.Download(), want_dw) <= 2e-3);
    // Accumulating (o_proj into the residual, k/v into one dx, dW over micro-batches): a
    // second pass doubles every output.
    REQUIRE(f.value()->Forward(d_x.ptr, weight.value(), y.ptr, n, true).ok());
    REQUIRE(f.value()->Backward(d_dy.ptr, d_x.ptr, weight.value(), dx.ptr, dw.ptr, n, true).ok());
    auto two = [](std::vector<float> v) {
      for (auto& e : v) e *= 2.0f;
      return v;
    };
    got_y = ToFloats(y.Download());
    got_dx = ToFloats(dx.Download());
    got_y.resize(want_y.size());
    got_dx.resize(want_dx.size());
    CHECK(MaxRelError(got_y, two(want_y)) <= 1e-2);
    CHECK(MaxRelError(got_dx, two(want_dx)) <= 1e-2);
    CHECK(MaxRelError(dw.Download(), two(want_dw)) <= 2e-3);
    if (n == 37)
      Record({"Fp8Linear fwd+bwd, 37 tokens", "fp8", MaxRelError(got_y, want_y), 1e-2, 0, 0, 0});
  }
}
