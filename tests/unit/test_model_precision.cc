// Linear layers in bf16 and fp8 are the GEMM of rounded operands — bf16 multiplied natively
// (oneDNN), fp8 as bf16 GEMMs of the E4M3 values over K-chunks of 128 scaled in fp32
// (kernels/cpu/fp8_gemm.h). Their products are exact in fp32 and only their sums run in
// another order than the fp32 GEMM's (and fp8's scales multiply after the chunk's sum, not
// before each product), so each agrees with the fp32 GEMM of the rounded (for fp8: dequantized)
// operands to fp32 rounding relative to the sum of the products' magnitudes — and a model in
// each precision stays close to fp32 while differing from it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/precision.h"
#include "tests/unit/grad_check.h"
#include "worker/model/linear.h"
#include "worker/model/model_stage.h"

namespace cpu = moerun::kernels::cpu;
using moerun::model::GemmPrecision;

namespace {

std::vector<float> RandomF(size_t n, uint32_t seed) {
  auto d = moerun::testing::Random(n, seed);
  return std::vector<float>(d.begin(), d.end());
}

// The products are exact in fp32; only the order of the sums (and for fp8 where the scales
// multiply) may differ from the fp32 GEMM's. |got − want| over the sum of the products'
// magnitudes (want_abs: the same GEMM on |operands|) then stays within K float epsilons; the
// bound, 1e-5, is about K/2 of them at the test's K = 200.
void CheckSameSums(const std::vector<float>& got, const std::vector<float>& want,
                   const std::vector<float>& want_abs) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (double(want_abs[i]) + 1e-30));
  INFO("worst difference over the sum of |products|: " << worst);
  CHECK(worst < 1e-5);
}

std::vector<float> Abs(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

}  // namespace

TEST_CASE("bf16 and fp8 linear layers multiply rounded operands") {
  const int64_t n = 5, in = 200, out = 130;  // ragged 128-tiles in both dimensions
  auto x = RandomF(n * in, 1), w = RandomF(out * in, 2), dy = RandomF(n * out, 3);
  for (auto p : {GemmPrecision::kBf16, GemmPrecision::kFp8}) {
    CAPTURE(int(p));
    std::vector<float> qx(x.size()), qw(w.size()), qdy(dy.size());
    // The weight gradient's operands: the same as qx/qdy in bf16, 128x1 tiles in fp8.
    std::vector<float> tx(x.size()), tdy(dy.size());
    if (p == GemmPrecision::kBf16) {
      cpu::RoundToBf16(x.data(), qx.data(), int64_t(x.size()));
      cpu::RoundToBf16(w.data(), qw.data(), int64_t(w.size()));
      cpu::RoundToBf16(dy.data(), qdy.data(), int64_t(dy.size()));
    } else {
      std::vector<float> s(4096);
      cpu::FakeQuantE4M3Tiles1x128(x.data(), qx.data(), s.data(), n, in);
      cpu::FakeQuantE4M3Blocks128x128(w.data(), qw.data(), s.data(), out, in);
      cpu::FakeQuantE4M3Tiles1x128(dy.data(), qdy.data(), s.data(), n, out);
    }
    if (p == GemmPrecision::kBf16) {
      tx = qx;
      tdy = qdy;
    } else {
      std::vector<float> s(4096);
      cpu::FakeQuantE4M3Tiles128x1(x.data(), tx.data(), s.data(), n, in);
      cpu::FakeQuantE4M3Tiles128x1(dy.data(), tdy.data(), s.data(), n, out);
      CHECK(tx != qx);  // different tiles, different rounding
    }
    std::vector<float> y(n * out), want(n * out);
    moerun::model::LinearForwardP(x.data(), w.data(), y.data(), n, in, out, p);
    cpu::LinearForward(qx.data(), qw.data(), want.data(), n, in, out);
    std::vector<float> want_abs(want.size());
    cpu::LinearForward(Abs(qx).data(), Abs(qw).data(), want_abs.data(), n, in, out);
    CheckSameSums(y, want, want_abs);
    std::vector<float> dx(x.size()), dw(w.size(), 0.0f), want_dx(x.size()), want_dw(w.size(), 0.0f);
    moerun::model::LinearBackwardP(dy.data(), x.data(), w.data(), dx.data(), dw.data(), n, in, out,
                                   false, p);
    std::vector<float> unused_dw(w.size(), 0.0f), unused_dx(x.size());
    cpu::LinearBackward(qdy.data(), qx.data(), qw.data(), want_dx.data(), unused_dw.data(), n, in,
                        out, false);
    cpu::LinearBackward(tdy.data(), tx.data(), qw.data(), unused_dx.data(), want_dw.data(), n, in,
                        out, false);
    std::vector<float> abs_dx(x.size()), abs_dw(w.size(), 0.0f), unused(w.size(), 0.0f);
    cpu::LinearBackward(Abs(qdy).data(), Abs(qx).data(), Abs(qw).data(), abs_dx.data(),
                        unused.data(), n, in, out, false);
    cpu::LinearBackward(Abs(tdy).data(), Abs(tx).data(), Abs(qw).data(), unused_dx.data(),
                        abs_dw.data(), n, in, out, false);
    CheckSameSums(dx, want_dx, abs_dx);
    CheckSameSums(dw, want_dw, abs_dw);
    // And the rounding is real: the fp32 product differs.
    std::vector<float> exact(n * out);
    cpu::LinearForward(x.data(), w.data(), exact.data(), n, in, out);
    CHECK(exact != y);
  }
}

TEST_CASE("a model's loss in bf16 and fp8 is near fp32's but not equal") {
  moerun::ModelSpec m;
  m.vocab_size = 64;
  m.seq_len = 16;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 2;
  m.dense_layers = 1;
  m.ffn_hidden = 64;
  m.init_std = 0.1;
  m.has_moe_section = true;
  m.moe.routed_experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_hidden = 32;
  moerun::model::StageRange all{0, 2, true, true};
  moerun::model::Parameters<float> params(moerun::model::StageTensors(m, all));
  params.Initialize(5, m.init_std);
  std::vector<int32_t> ids(32), tg(32);
  for (int i = 0; i < 32; ++i) ids[i] = (i * 7) % 64, tg[i] = (i * 11 + 3) % 64;
  double loss[3];
  int i = 0;
  for (auto prec : {moerun::Precision::kFp32, moerun::Precision::kBf16, moerun::Precision::kFp8}) {
    moerun::model::ModelStage<float> stage(m, all, &params, prec);
    moerun::model::StageActivations<float> acts;
    auto l = stage.Forward(acts, ids.data(), nullptr, tg.data(), 2, 16, nullptr);
    REQUIRE(l.ok());
    loss[i++] = l.value();
  }
  CHECK(loss[1] != loss[0]);
  CHECK(loss[2] != loss[0]);
  CHECK(std::fabs(loss[1] - loss[0]) / loss[0] < 0.01);
  CHECK(std::fabs(loss[2] - loss[0]) / loss[0] < 0.05);
}

TEST_CASE("the gate/up pair converts x once and gives two linear layers' bits") {
  const int64_t n = 130, in = 200, out = 70;
  auto x = RandomF(n * in, 11), wa = RandomF(out * in, 12), wb = RandomF(out * in, 13);
  auto dya = RandomF(n * out, 14), dyb = RandomF(n * out, 15);
  for (auto p : {GemmPrecision::kFp32, GemmPrecision::kBf16, GemmPrecision::kFp8}) {
    CAPTURE(int(p));
    std::vector<float> ya(n * out), yb(n * out), want_a(n * out), want_b(n * out);
    moerun::model::LinearForwardPair(x.data(), wa.data(), wb.data(), ya.data(), yb.data(), n, in,
                                     out, p);
    moerun::model::LinearForwardP(x.data(), wa.data(), want_a.data(), n, in, out, p);
    moerun::model::LinearForwardP(x.data(), wb.data(), want_b.data(), n, in, out, p);
    CHECK(ya == want_a);
    CHECK(yb == want_b);
    std::vector<float> dx(n * in), dwa(out * in, 0.5f), dwb(out * in, 0.25f);
    std::vector<float> want_dx(n * in), want_dwa = dwa, want_dwb = dwb;
    moerun::model::LinearBackwardPair(dya.data(), dyb.data(), x.data(), wa.data(), wb.data(),
                                      dx.data(), dwa.data(), dwb.data(), n, in, out, false, p);
    moerun::model::LinearBackwardP(dya.data(), x.data(), wa.data(), want_dx.data(), want_dwa.data(),
                                   n, in, out, false, p);
    moerun::model::LinearBackwardP(dyb.data(), x.data(), wb.data(), want_dx.data(), want_dwb.data(),
                                   n, in, out, true, p);
    CHECK(dx == want_dx);
    CHECK(dwa == want_dwa);
    CHECK(dwb == want_dwb);
  }
}
