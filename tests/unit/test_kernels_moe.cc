// Router, dispatch and combine against finite differences and their definitions; AdamW and
// clipping against their formulas.
#include <doctest/doctest.h>

#include <set>

#include "kernels/cpu/moe_dispatch.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/router.h"
#include "tests/unit/grad_check.h"

namespace cpu = moerun::kernels::cpu;
using moerun::testing::CheckGradient;
using moerun::testing::Dot;
using moerun::testing::Random;
using V = std::vector<double>;

namespace {

// Gradient of Σ gates ⊙ G + seq-balance loss with respect to the router logits, the
// selection held fixed (it is piecewise constant).
void CheckRouter(cpu::RouterConfig cfg, int64_t b, int64_t t, double alpha, uint32_t seed) {
  const int64_t n = b * t, e = cfg.experts, k = cfg.top_k;
  V logits = Random(n * e, seed, 2.0), g = Random(n * k, seed + 1);
  std::vector<float> bias(e);
  for (int64_t j = 0; j < e; ++j) bias[j] = 0.05f * float(j % 3);
  V scores(n * e), gates(n * k);
  std::vector<int32_t> idx(n * k), idx0;
  auto loss = [&] {
    cpu::RouterScores(logits.data(), scores.data(), n, cfg);
    cpu::RouterSelect(scores.data(), bias.data(), idx.data(), gates.data(), n, cfg);
    if (!idx0.empty()) REQUIRE(idx == idx0);  // the perturbation must not flip a choice
    return Dot(gates, g) +
           cpu::SeqBalanceLoss<double>(scores.data(), idx.data(), b, t, alpha, cfg, nullptr, 1.0);
  };
  loss();
  idx0 = idx;
  V ds(n * e, 0.0), dl(n * e);
  cpu::RouterGatesBackward(g.data(), scores.data(), idx.data(), ds.data(), n, cfg);
  cpu::SeqBalanceLoss(scores.data(), idx.data(), b, t, alpha, cfg, ds.data(), 1.0);
  cpu::RouterScoresBackward(ds.data(), scores.data(), dl.data(), n, cfg);
  CheckGradient(cfg.softmax ? "softmax router" : "sigmoid router", logits, dl, loss, 1e-6, 1e-7);
}

}  // namespace

TEST_CASE("router gradients: sigmoid and softmax, with and without groups and balance loss") {
  CheckRouter({8, 2, 1, 1, false, 1.0}, 2, 5, 0.0, 20);
  CheckRouter({8, 2, 1, 1, false, 2.5}, 2, 5, 0.01, 22);
  CheckRouter({8, 3, 4, 2, false, 2.5}, 3, 4, 0.1, 24);
  CheckRouter({6, 2, 1, 1, true, 1.0}, 2, 5, 0.05, 26);
  CheckRouter({8, 8, 1, 1, false, 1.0}, 1, 6, 0.01, 28);  // top_k = routed experts
}

TEST_CASE("router selection: bias steers choice, gates use the unbiased scores") {
  cpu::RouterConfig cfg{4, 2, 1, 1, false, 2.0};
  V scores = {0.9, 0.8, 0.1, 0.2};
  std::vector<int32_t> idx(2);
  V gates(2);
  cpu::RouterSelect(scores.data(), nullptr, idx.data(), gates.data(), 1, cfg);
  CHECK(idx == std::vector<int32_t>{0, 1});
  CHECK(gates[0] == doctest::Approx(2.0 * 0.9 / 1.7));
  std::vector<float> bias = {0.0f, -1.0f, 0.0f, 0.75f};  // push expert 1 out, 3 in
  cpu::RouterSelect(scores.data(), bias.data(), idx.data(), gates.data(), 1, cfg);
  CHECK(idx == std::vector<int32_t>{3, 0});
  CHECK(gates[0] == doctest::Approx(2.0 * 0.2 / 1.1));  // s, not s + b
  CHECK(gates[1] == doctest::Approx(2.0 * 0.9 / 1.1));
  // Ties go to the lower index.
  V tie = {0.5, 0.5, 0.5, 0.5};
  cpu::RouterSelect(tie.data(), nullptr, idx.data(), gates.data(), 1, cfg);
  CHECK(idx == std::vector<int32_t>{0, 1});
}

TEST_CASE("group-limited routing keeps the groups with the best top-2 sums") {
  // 8 experts in 4 groups of 2; keep 2 groups. Group sums: g0 1.0, g1 1.5, g2 0.2, g3 1.4.
  cpu::RouterConfig cfg{8, 2, 4, 2, false, 1.0};
  V s = {0.95, 0.05, 0.75, 0.75, 0.1, 0.1, 0.7, 0.7};
  std::vector<int32_t> idx(2);
  V gates(2);
  cpu::RouterSelect(s.data(), nullptr, idx.data(), gates.data(), 1, cfg);
  // Expert 0 has the best single score but its group is out.
  CHECK(idx == std::vector<int32_t>{2, 3});
}

TEST_CASE("dispatch and combine: gradients and edge cases") {
  const int64_t d = 3;
  struct Case {
    const char* name;
    int64_t n, k, e;
    std::vector<int32_t> idx;
  };
  std::vector<Case> cases = {
      {"uneven", 5, 2, 4, {0, 2, 2, 0, 3, 2, 2, 0, 0, 3}},
      {"empty experts", 4, 1, 6, {5, 5, 0, 5}},
      {"all tokens to one expert", 4, 2, 3, {1, 1, 1, 1, 1, 1, 1, 1}},
      {"top_k = experts", 3, 3, 3, {2, 0, 1, 0, 1, 2, 1, 2, 0}},
  };
  for (const Case& c : cases) {
    CAPTURE(std::string(c.name));
    cpu::DispatchPlan plan = cpu::PlanDispatch(c.idx.data(), c.n, c.k, c.e);
    // Rows of each expert are contiguous and in token order.
    for (int64_t e = 0; e < c.e; ++e) {
      for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
        CHECK(c.idx[plan.row_token[r] * c.k + plan.row_slot[r]] == e);
        if (r > plan.offsets[e]) CHECK(plan.row_token[r - 1] <= plan.row_token[r]);
      }
    }
    CHECK(plan.offsets[c.e] == c.n * c.k);
    // A stand-in expert e multiplies its rows by (e + 1) and squares them: nonlinear, so the
    // gradient check sees dispatch, expert and combine together.
    V x = Random(c.n * d, 30), gates = Random(c.n * c.k, 31), g = Random(c.n * d, 32);
    V buf(c.n * c.k * d), out(buf.size()), y(c.n * d);
    auto loss = [&] {
      cpu::DispatchRows(x.data(), plan, buf.data(), d);
      for (int64_t e = 0; e < c.e; ++e)
        for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
          for (int64_t j = 0; j < d; ++j)
            out[r * d + j] = (e + 1) * buf[r * d + j] * buf[r * d + j];
      std::fill(y.begin(), y.end(), 0.0);
      cpu::Combine(out.data(), gates.data(), plan, y.data(), d);
      return Dot(y, g);
    };
    loss();
    V dout(out.size()), dgates(gates.size()), dbuf(buf.size()), dx(x.size(), 0.0);
    cpu::CombineBackward(g.data(), out.data(), gates.data(), plan, dout.data(), dgates.data(), d);
    for (int64_t e = 0; e < c.e; ++e)
      for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
        for (int64_t j = 0; j < d; ++j)
          dbuf[r * d + j] = dout[r * d + j] * 2 * (e + 1) * buf[r * d + j];
    cpu::DispatchRowsBackward(dbuf.data(), plan, dx.data(), d);
    CheckGradient("dispatch+combine dx", x, dx, loss);
    CheckGradient("dispatch+combine dgates", gates, dgates, loss);
  }
}

TEST_CASE("AdamW follows its formula; decay only where asked") {
  std::vector<float> p = {1.0f, -2.0f}, m = {0, 0}, v = {0, 0}, g = {0.5f, -0.25f};
  cpu::AdamWStep s{0.1, 0.9, 0.95, 1e-8, 0.1, 1};
  std::vector<float> p2 = p, m2 = m, v2 = v;
  cpu::AdamWUpdate(p.data(), g.data(), m.data(), v.data(), 2, s, true);
  cpu::AdamWUpdate(p2.data(), g.data(), m2.data(), v2.data(), 2, s, false);
  // Step 1: m̂ = g, v̂ = g², so the update is lr · (sign(g) + wd · p).
  CHECK(p[0] == doctest::Approx(1.0 - 0.1 * (1.0 + 0.1 * 1.0)).epsilon(1e-6));
  CHECK(p2[0] == doctest::Approx(1.0 - 0.1).epsilon(1e-6));
  CHECK(p2[1] == doctest::Approx(-2.0 + 0.1).epsilon(1e-6));
  CHECK(m[0] == doctest::Approx(0.05));
  CHECK(v[1] == doctest::Approx(0.05 * 0.0625));
}

TEST_CASE("global-norm clipping") {
  std::vector<float> g = {3.0f, 4.0f};
  const double norm = std::sqrt(cpu::SumOfSquares(g.data(), 2));
  CHECK(norm == doctest::Approx(5.0));
  CHECK(cpu::ClipFactor(norm, 10.0) == 1.0);
  CHECK(cpu::ClipFactor(norm, 0.0) == 1.0);
  const double f = cpu::ClipFactor(norm, 1.0);
  cpu::ScaleInPlace(g.data(), 2, float(f));
  CHECK(std::sqrt(cpu::SumOfSquares(g.data(), 2)) == doctest::Approx(1.0).epsilon(1e-5));
}
