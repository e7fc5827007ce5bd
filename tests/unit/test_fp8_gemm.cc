// The block-scaled fp8 GEMM (kernels/cpu/fp8_gemm.h) against its definition computed in
// double: per K-chunk of 128, the exact sum of products times the chunk's row and column
// scales, chunks added. The GEMM sums each chunk in fp32 and scales in fp32, so it agrees to
// fp32 rounding relative to the sum of the terms' magnitudes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/precision.h"

namespace cpu = moerun::kernels::cpu;

namespace {

float FromBf16(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Random E4M3 values as bf16 bits.
std::vector<uint16_t> RandomE4M3(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 60.0f);
  std::vector<uint16_t> q(n);
  for (auto& v : q) {
    const float e = cpu::RoundToE4M3(d(rng));
    uint32_t bits;
    std::memcpy(&bits, &e, 4);
    v = uint16_t(bits >> 16);
  }
  return q;
}

std::vector<float> RandomScales(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(1e-3f, 2e-2f);
  std::vector<float> s(n);
  for (auto& v : s) v = d(rng);
  return s;
}

}  // namespace

TEST_CASE("block-scaled GEMM: per-chunk scaled fp32 sums, every transpose, ragged chunks") {
  // m spans several of the GEMM's row blocks; k = 300 ends in a 44-wide chunk.
  const int64_t m = 150, n = 600, k = 300, chunks = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (bool accumulate : {false, true}) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(accumulate);
        const int64_t lda = ta ? m : k, ldb = tb ? k : n;
        const auto a = RandomE4M3(size_t(m * k), 1), b = RandomE4M3(size_t(k * n), 2);
        const auto sa = RandomScales(size_t(chunks * m), 3),
                   sb = RandomScales(size_t(chunks * n), 4);
        std::vector<float> c(size_t(m * n), 0.5f);
        cpu::BlockScaledGemm(ta, tb, m, n, k, a.data(), lda, sa.data(), b.data(), ldb, sb.data(),
                             accumulate, c.data(), n);
        double worst = 0;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double want = accumulate ? 0.5 : 0.0, mag = std::fabs(want);
            for (int64_t ch = 0; ch < chunks; ++ch) {
              double sum = 0, abs_sum = 0;
              for (int64_t p = ch * 128; p < std::min(k, ch * 128 + 128); ++p) {
                const double x = FromBf16(ta ? a[size_t(p * lda + i)] : a[size_t(i * lda + p)]);
                const double y = FromBf16(tb ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)]);
                sum += x * y;
                abs_sum += std::fabs(x * y);
              }
              const double s = double(sa[size_t(ch * m + i)]) * sb[size_t(ch * n + j)];
              want += s * sum;
              mag += s * abs_sum;
            }
            worst = std::max(worst, std::fabs(c[size_t(i * n + j)] - want) / mag);
          }
        }
        INFO("worst difference over the sum of |terms|: " << worst);
        CHECK(worst < 2e-6);  // about 30 float epsilons: 128-term fp32 sums, then 3 roundings
        CHECK(worst > 0);     // and the fp32 rounding is there: this is not the double sum
      }
    }
  }
}

TEST_CASE("block-scaled GEMM: k = 0 writes zeros or leaves C as it is") {
  std::vector<float> c(6, 2.0f);
  const std::vector<uint16_t> none;
  cpu::BlockScaledGemm(false, false, 2, 3, 0, none.data(), 0, nullptr, none.data(), 3, nullptr,
                       true, c.data(), 3);
  CHECK(c == std::vector<float>(6, 2.0f));
  cpu::BlockScaledGemm(false, false, 2, 3, 0, none.data(), 0, nullptr, none.data(), 3, nullptr,
                       false, c.data(), 3);
  CHECK(c == std::vector<float>(6, 0.0f));
}

TEST_CASE("block-scaled GEMM: bit for bit one bf16 GEMM and one scaling pass per chunk") {
  // Five chunks: a group of four added in one pass, then one more.
  const int64_t m = 40, n = 70, k = 600, chunks = 5;
  const auto a = RandomE4M3(size_t(m * k), 5), b = RandomE4M3(size_t(n * k), 6);
  const auto sa = RandomScales(size_t(chunks * m), 7), sb = RandomScales(size_t(chunks * n), 8);
  if (!cpu::DnnlHasBf16()) return;  // the definition below multiplies in bf16
  for (bool accumulate : {false, true}) {
    CAPTURE(accumulate);
    std::vector<float> got(size_t(m * n), 0.25f), want(size_t(m * n), 0.25f);
    cpu::BlockScaledGemm(false, true, m, n, k, a.data(), k, sa.data(), b.data(), k, sb.data(),
                         accumulate, got.data(), n);
    std::vector<float> p(size_t(m * n));
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t k0 = ch * 128, kc = std::min<int64_t>(128, k - k0);
      cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, true, m, n, kc, 1.0f, a.data() + k0, k,
                    b.data() + k0, k, 0.0f, p.data(), n);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          const float s = sa[size_t(ch * m + i)] * sb[size_t(ch * n + j)];
          const float t = s * p[size_t(i * n + j)];
          float& c = want[size_t(i * n + j)];
          c = (ch == 0 && !accumulate) ? t : c + t;
        }
      }
    }
    CHECK(got == want);
  }
}
