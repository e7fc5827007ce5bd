// Multi-head latent attention's CPU kernels: interleaved RoPE, the attention core against
// plain multi-head attention over assembled keys and values (sequences longer than one row
// block, so the causal blocking is crossed), and gradients against finite differences in
// double precision.
#include <doctest/doctest.h>

#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/mla_attention.h"
#include "tests/unit/grad_check.h"

namespace cpu = moerun::kernels::cpu;
using moerun::testing::CheckGradient;
using moerun::testing::Dot;
using moerun::testing::Random;
using V = std::vector<double>;

TEST_CASE("interleaved rope: pairs (2i, 2i+1), strided heads, inverse is the gradient") {
  // Two heads of 4 RoPE values at offset 2 within heads of 6, rows of 14 (2 heads + 2 spare).
  const int64_t b = 2, t = 4, h = 2, row = 14, head = 6, dim = 4, off = 2;
  V x = Random(b * t * row, 21), g = Random(x.size(), 22);
  V y = x;
  cpu::RopeInterleaved(y.data() + off, b, t, h, row, head, dim, 10000.0, false);
  // Position 0 is unturned; at position 1 pair (0,1) turns by 1 rad and pair (2,3) by 0.01.
  for (int64_t i = 0; i < row; ++i) CHECK(y[i] == x[i]);
  for (int64_t hi = 0; hi < h; ++hi) {
    const int64_t p = row + hi * head + off;
    CHECK(y[p] == doctest::Approx(x[p] * std::cos(1.0) - x[p + 1] * std::sin(1.0)));
    CHECK(y[p + 1] == doctest::Approx(x[p + 1] * std::cos(1.0) + x[p] * std::sin(1.0)));
    CHECK(y[p + 2] == doctest::Approx(x[p + 2] * std::cos(0.01) - x[p + 3] * std::sin(0.01)));
  }
  // Values outside the RoPE parts are untouched.
  for (int64_t r = 0; r < b * t; ++r) {
    for (int64_t c : {0, 1, 12, 13}) CHECK(y[r * row + c] == x[r * row + c]);
  }
  auto loss = [&] {
    V z = x;
    cpu::RopeInterleaved(z.data() + off, b, t, h, row, head, dim, 10000.0, false);
    return Dot(z, g);
  };
  V dx = g;
  cpu::RopeInterleaved(dx.data() + off, b, t, h, row, head, dim, 10000.0, true);
  CheckGradient("interleaved rope dx", x, dx, loss);
}

namespace {

struct MlaCase {
  int64_t b, t;
  cpu::MlaDims dims;
};

// Keys [N, H, dn + dr] (k_nope of each head, then the shared k_pe) and values [N, H, dv].
void Assemble(const MlaCase& c, const V& kv, const V& kpe, V* k, V* v) {
  const auto& m = c.dims;
  const int64_t n = c.b * c.t, dk = m.nope + m.rope, dkv = m.nope + m.v;
  k->assign(n * m.heads * dk, 0);
  v->assign(n * m.heads * m.v, 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < m.heads; ++h) {
      const double* src = kv.data() + (i * m.heads + h) * dkv;
      double* kd = k->data() + (i * m.heads + h) * dk;
      std::copy(src, src + m.nope, kd);
      std::copy(kpe.data() + i * m.rope, kpe.data() + (i + 1) * m.rope, kd + m.nope);
      std::copy(src + m.nope, src + dkv, v->data() + (i * m.heads + h) * m.v);
    }
  }
}

}  // namespace

TEST_CASE("mla attention: equals multi-head attention over the assembled keys and values") {
  // 150 tokens cross two row-block boundaries (64, 128).
  for (const MlaCase& c : {MlaCase{2, 5, {3, 4, 2, 3}}, MlaCase{1, 150, {2, 6, 4, 5}}}) {
    CAPTURE(c.t);
    const auto& m = c.dims;
    const int64_t n = c.b * c.t, dk = m.nope + m.rope;
    const double scale = 1.0 / std::sqrt(double(dk));
    V q = Random(n * m.heads * dk, 31), kv = Random(n * m.heads * (m.nope + m.v), 32),
      kpe = Random(n * m.rope, 33), dout = Random(n * m.heads * m.v, 34);
    V out(n * m.heads * m.v), probs(c.b * m.heads * c.t * c.t);
    cpu::MlaAttentionForward(q.data(), kv.data(), kpe.data(), out.data(), probs.data(), c.b, c.t, m,
                             scale);
    V k, v, ref(out.size()), ref_probs(probs.size());
    Assemble(c, kv, kpe, &k, &v);
    cpu::AttentionForward(q.data(), k.data(), v.data(), ref.data(), ref_probs.data(), c.b, c.t,
                          m.heads, dk, m.v, scale);
    for (size_t i = 0; i < out.size(); ++i)
      REQUIRE(out[i] == doctest::Approx(ref[i]).epsilon(1e-12));

    V dq(q.size()), dkv(kv.size()), dkpe(kpe.size());
    cpu::MlaAttentionBackward(dout.data(), q.data(), kv.data(), kpe.data(), probs.data(), dq.data(),
                              dkv.data(), dkpe.data(), c.b, c.t, m, scale);
    V rdq(q.size()), rdk(k.size()), rdv(v.size());
    cpu::AttentionBackward(dout.data(), q.data(), k.data(), v.data(), ref_probs.data(), rdq.data(),
                           rdk.data(), rdv.data(), c.b, c.t, m.heads, dk, m.v, scale);
    for (size_t i = 0; i < dq.size(); ++i) REQUIRE(dq[i] == doctest::Approx(rdq[i]).epsilon(1e-12));
    // dkv holds each head's dk_nope and dv; dkpe sums the heads' dk_pe.
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = 0; r < m.rope; ++r) {
        double sum = 0;
        for (int64_t h = 0; h < m.heads; ++h) sum += rdk[(i * m.heads + h) * dk + m.nope + r];
        REQUIRE(dkpe[i * m.rope + r] == doctest::Approx(sum).epsilon(1e-12));
      }
      for (int64_t h = 0; h < m.heads; ++h) {
        const double* d = dkv.data() + (i * m.heads + h) * (m.nope + m.v);
        for (int64_t j = 0; j < m.nope; ++j)
          REQUIRE(d[j] == doctest::Approx(rdk[(i * m.heads + h) * dk + j]).epsilon(1e-12));
        for (int64_t j = 0; j < m.v; ++j)
          REQUIRE(d[m.nope + j] ==
                  doctest::Approx(rdv[(i * m.heads + h) * m.v + j]).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("mla attention: dq, dkv, dkpe against finite differences; the future is invisible") {
  const int64_t b = 2, t = 5;
  const cpu::MlaDims m{2, 3, 2, 3};
  const int64_t n = b * t;
  const double scale = 0.4;
  V q = Random(n * m.heads * (m.nope + m.rope), 41), kv = Random(n * m.heads * (m.nope + m.v), 42),
    kpe = Random(n * m.rope, 43), g = Random(n * m.heads * m.v, 44);
  V out(g.size()), probs(b * m.heads * t * t);
  auto loss = [&] {
    cpu::MlaAttentionForward(q.data(), kv.data(), kpe.data(), out.data(), probs.data(), b, t, m,
                             scale);
    return Dot(out, g);
  };
  loss();
  V dq(q.size()), dkv(kv.size()), dkpe(kpe.size());
  cpu::MlaAttentionBackward(g.data(), q.data(), kv.data(), kpe.data(), probs.data(), dq.data(),
                            dkv.data(), dkpe.data(), b, t, m, scale);
  CheckGradient("mla dq", q, dq, loss);
  CheckGradient("mla dkv", kv, dkv, loss);
  CheckGradient("mla dkpe", kpe, dkpe, loss);
  // The last token's key and value change nothing before it.
  loss();
  const V before = out;
  for (int64_t j = 0; j < m.rope; ++j) kpe[(t - 1) * m.rope + j] += 3.0;
  for (int64_t j = 0; j < m.heads * (m.nope + m.v); ++j)
    kv[(t - 1) * m.heads * (m.nope + m.v) + j] += 3.0;
  loss();
  for (int64_t i = 0; i < (t - 1) * m.heads * m.v; ++i) CHECK(out[i] == before[i]);
}
