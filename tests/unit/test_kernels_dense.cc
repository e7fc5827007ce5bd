// Dense CPU kernels against finite differences in double precision.
#include <doctest/doctest.h>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/grad_check.h"

namespace cpu = moerun::kernels::cpu;
using moerun::testing::CheckGradient;
using moerun::testing::Dot;
using moerun::testing::Random;
using V = std::vector<double>;

TEST_CASE("linear: dx and dW") {
  const int64_t n = 5, in = 7, out = 4;
  V x = Random(n * in, 1), w = Random(out * in, 2), g = Random(n * out, 3);
  V y(n * out), dx(n * in), dw(out * in, 0.0);
  auto loss = [&] {
    cpu::LinearForward(x.data(), w.data(), y.data(), n, in, out);
    return Dot(y, g);
  };
  loss();
  cpu::LinearBackward(g.data(), x.data(), w.data(), dx.data(), dw.data(), n, in, out, false);
  CheckGradient("linear dx", x, dx, loss);
  CheckGradient("linear dW", w, dw, loss);
  // dW accumulates; dx accumulates only when asked.
  V dw2 = dw, dx2 = dx;
  cpu::LinearBackward(g.data(), x.data(), w.data(), dx2.data(), dw2.data(), n, in, out, true);
  for (size_t i = 0; i < dw.size(); ++i) CHECK(dw2[i] == doctest::Approx(2 * dw[i]));
  for (size_t i = 0; i < dx.size(); ++i) CHECK(dx2[i] == doctest::Approx(2 * dx[i]));
}

TEST_CASE("rmsnorm: dx and dw") {
  const int64_t n = 4, d = 9;
  V x = Random(n * d, 4), w = Random(d, 5), g = Random(n * d, 6);
  V y(n * d), rstd(n), dx(n * d), dw(d, 0.0);
  auto loss = [&] {
    cpu::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), n, d);
    return Dot(y, g);
  };
  loss();
  cpu::RmsNormBackward(g.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), n, d);
  CheckGradient("rmsnorm dx", x, dx, loss);
  CheckGradient("rmsnorm dw", w, dw, loss);
  // The definition: x / sqrt(mean(x²) + 1e-6) * w.
  double ss = 0;
  for (int64_t j = 0; j < d; ++j) ss += x[j] * x[j];
  CHECK(y[3] == doctest::Approx(x[3] / std::sqrt(ss / d + 1e-6) * w[3]));
}

TEST_CASE("rope: rotate-half pairs, inverse undoes it, gradient is the inverse") {
  const int64_t b = 2, t = 5, h = 3, hd = 8;
  V x = Random(b * t * h * hd, 7), g = Random(x.size(), 8);
  V y = x;
  cpu::Rope(y.data(), b, t, h, hd, 10000.0, false);
  // Position 0 is unrotated; at position 1, dimension 0 pairs with hd/2 at angle 1 rad.
  for (int64_t i = 0; i < h * hd; ++i) CHECK(y[i] == doctest::Approx(x[i]));
  const int64_t p1 = h * hd;
  CHECK(y[p1] == doctest::Approx(x[p1] * std::cos(1.0) - x[p1 + 4] * std::sin(1.0)));
  CHECK(y[p1 + 4] == doctest::Approx(x[p1 + 4] * std::cos(1.0) + x[p1] * std::sin(1.0)));
  V back = y;
  cpu::Rope(back.data(), b, t, h, hd, 10000.0, true);
  for (size_t i = 0; i < x.size(); ++i) CHECK(back[i] == doctest::Approx(x[i]).epsilon(1e-12));
  auto loss = [&] {
    V z = x;
    cpu::Rope(z.data(), b, t, h, hd, 10000.0, false);
    return Dot(z, g);
  };
  V dx = g;
  cpu::Rope(dx.data(), b, t, h, hd, 10000.0, true);
  CheckGradient("rope dx", x, dx, loss);
}

TEST_CASE("swiglu: dgate and dup") {
  const int64_t n = 30;
  V gate = Random(n, 9, 2.0), up = Random(n, 10), g = Random(n, 11), out(n), dg(n), du(n);
  auto loss = [&] {
    cpu::SwiGluForward(gate.data(), up.data(), out.data(), n);
    return Dot(out, g);
  };
  loss();
  cpu::SwiGluBackward(g.data(), gate.data(), up.data(), dg.data(), du.data(), n);
  CheckGradient("swiglu dgate", gate, dg, loss);
  CheckGradient("swiglu dup", up, du, loss);
}

TEST_CASE("embedding: gather and scatter-add") {
  const int64_t v = 6, d = 4, n = 8;
  std::vector<int32_t> ids = {0, 3, 3, 5, 1, 3, 0, 2};
  V table = Random(v * d, 12), g = Random(n * d, 13), out(n * d), dt(v * d, 0.0);
  auto loss = [&] {
    cpu::EmbeddingForward(table.data(), ids.data(), out.data(), n, d);
    return Dot(out, g);
  };
  loss();
  cpu::EmbeddingBackward(g.data(), ids.data(), dt.data(), n, d);
  CheckGradient("embedding dtable", table, dt, loss);
}

TEST_CASE("cross-entropy: mean loss and dlogits") {
  const int64_t n = 6, v = 11;
  std::vector<int32_t> tgt = {0, 10, 3, 3, 7, 1};
  V logits = Random(n * v, 14, 3.0), dl(n * v);
  auto loss = [&] {
    return cpu::CrossEntropy<double>(logits.data(), tgt.data(), nullptr, n, v, 1.0);
  };
  const double l = cpu::CrossEntropy(logits.data(), tgt.data(), dl.data(), n, v, 1.0);
  CHECK(l == doctest::Approx(loss()));
  CheckGradient("cross-entropy dlogits", logits, dl, loss);
  // Uniform logits give ln(V).
  V flat(n * v, 0.5);
  CHECK(cpu::CrossEntropy<double>(flat.data(), tgt.data(), nullptr, n, v, 1.0) ==
        doctest::Approx(std::log(11.0)));
}

TEST_CASE("causal attention: dq, dk, dv; the future is invisible") {
  const int64_t b = 2, t = 5, h = 2, dk = 4, dv = 3;
  const double scale = 1.0 / std::sqrt(double(dk));
  V q = Random(b * t * h * dk, 15), k = Random(q.size(), 16), v = Random(b * t * h * dv, 17);
  V g = Random(v.size(), 18), out(v.size()), probs(b * h * t * t);
  auto loss = [&] {
    cpu::AttentionForward(q.data(), k.data(), v.data(), out.data(), probs.data(), b, t, h, dk, dv,
                          scale);
    return Dot(out, g);
  };
  loss();
  V dq(q.size()), dkk(k.size()), dvv(v.size());
  cpu::AttentionBackward(g.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                         dkk.data(), dvv.data(), b, t, h, dk, dv, scale);
  CheckGradient("attention dq", q, dq, loss);
  CheckGradient("attention dk", k, dkk, loss);
  CheckGradient("attention dv", v, dvv, loss);
  // Changing the last token's key or value leaves earlier outputs unchanged.
  loss();
  V before = out;
  for (int64_t j = 0; j < h * dv; ++j) v[(t - 1) * h * dv + j] += 5.0;
  loss();
  for (int64_t i = 0; i < (t - 1) * h * dv; ++i) CHECK(out[i] == before[i]);
}
