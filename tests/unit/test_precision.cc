// CPU precision emulation: bf16 and E4M3 rounding against their definitions, and the 1x128 /
// 128x128 scaling of DeepSeek-V3's fp8 recipe.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/precision.h"

namespace cpu = moerun::kernels::cpu;

namespace {

// Every finite non-negative E4M3 ("fn") value, by decoding the bit patterns.
std::vector<float> E4M3Values() {
  std::vector<float> v;
  for (int bits = 0; bits < 0x7f; ++bits) {  // 0x7f is NaN
    const int e = bits >> 3, m = bits & 7;
    v.push_back(e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7));
  }
  return v;
}

float Bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The E4M3 rounding written plainly, with branches, as a second definition to hold the
// vectorized one to.
float PlainE4M3(float x) {
  if (std::isnan(x)) return x;
  const float a = std::fabs(x);
  if (a >= 448.0f) return std::copysign(448.0f, x);
  float r;
  if (a < 0x1p-6f) {
    r = std::nearbyint(a * 512.0f) / 512.0f;  // subnormals: multiples of 2^-9, ties to even
  } else {
    int e;
    const float m = std::frexp(a, &e);  // a = m · 2^e, m in [0.5, 1): 4 significant bits
    r = std::ldexp(std::nearbyint(std::ldexp(m, 4)), e - 4);
  }
  return std::copysign(std::min(r, 448.0f), x);
}

}  // namespace

TEST_CASE("bf16 rounds to nearest, ties to even") {
  CHECK(cpu::RoundToBf16(1.0f) == 1.0f);
  CHECK(cpu::RoundToBf16(Bits(0x3f808000)) == Bits(0x3f800000));  // tie, even below
  CHECK(cpu::RoundToBf16(Bits(0x3f818000)) == Bits(0x3f820000));  // tie, even above
  CHECK(cpu::RoundToBf16(Bits(0x3f808001)) == Bits(0x3f810000));  // above the tie
  CHECK(std::isinf(cpu::RoundToBf16(INFINITY)));
  CHECK(std::isnan(cpu::RoundToBf16(NAN)));
  CHECK(std::isinf(cpu::RoundToBf16(3.4e38f)));  // rounds past the largest bf16
}

TEST_CASE("bf16 bits (the native GEMMs' operands) are RoundToBf16's upper half, every class") {
  std::vector<float> in;
  for (uint32_t b : {0x3f808000u, 0x3f818000u, 0x3f808001u, 0xbf808000u, 0x7f7fffffu, 0x00000001u,
                     0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00001u, 0x7f800001u, 0xffa00000u})
    in.push_back(Bits(b));
  std::mt19937 rng(5);
  for (int i = 0; i < 4096; ++i) in.push_back(Bits(rng()));  // every exponent, NaNs included
  std::vector<uint16_t> got(in.size());
  cpu::ToBf16Bits(in.data(), got.data(), int64_t(in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    const float want = cpu::RoundToBf16(in[i]);
    uint32_t w;
    std::memcpy(&w, &want, 4);
    CAPTURE(i);
    CHECK(got[i] == uint16_t(w >> 16));
  }
}

TEST_CASE("E4M3: representable values are fixed points, midpoints tie to even") {
  auto values = E4M3Values();
  CHECK(values.back() == 448.0f);
  for (size_t i = 0; i < values.size(); ++i) {
    CHECK(cpu::RoundToE4M3(values[i]) == values[i]);
    CHECK(cpu::RoundToE4M3(-values[i]) == -values[i]);
    if (i + 1 < values.size()) {
      const float mid = 0.5f * (values[i] + values[i + 1]);
      // Even mantissa = even bit pattern index.
      const float expect = (i % 2 == 0) ? values[i] : values[i + 1];
      CHECK(cpu::RoundToE4M3(mid) == expect);
      CHECK(cpu::RoundToE4M3(std::nextafter(mid, 0.0f)) == values[i]);
      CHECK(cpu::RoundToE4M3(std::nextafter(mid, 1e9f)) == values[i + 1]);
    }
  }
  CHECK(cpu::RoundToE4M3(1e6f) == 448.0f);  // saturates
  CHECK(cpu::RoundToE4M3(-500.0f) == -448.0f);
  CHECK(std::isnan(cpu::RoundToE4M3(NAN)));
}

TEST_CASE("E4M3 rounding equals its plain definition across the float range") {
  // Every 61st bit pattern (70 million values: each exponent, both signs, NaNs, infinities).
  int64_t wrong = 0;
  for (uint64_t b = 0; b <= 0xffffffffull; b += 61) {
    const float x = Bits(uint32_t(b)), got = cpu::RoundToE4M3(x), want = PlainE4M3(x);
    if (std::isnan(want) ? !std::isnan(got) : std::memcmp(&got, &want, 4) != 0) {
      if (wrong++ < 5) INFO("x bits " << b << " got " << got << " want " << want);
    }
  }
  CHECK(wrong == 0);
  for (float x : {0x1p-10f, 0x1.8p-10f, 0x3p-10f, 0x1.fep-7f, 464.0f, 480.0f, -INFINITY})
    CHECK(cpu::RoundToE4M3(x) == PlainE4M3(x));
}

TEST_CASE("the GEMM quantizers' E4M3 values times their scales are FakeQuant's output") {
  const int64_t rows = 260, cols = 300;  // ragged tiles and blocks both ways
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = n(rng);
  x[17] = 1e-4f;  // about 2^-7 of its tiles' scales: an E4M3 subnormal
  std::vector<float> fake(x.size()), s1(4096), s2(4096);
  std::vector<uint16_t> q(x.size());
  // Elements whose q is not an E4M3 value, or whose q · scale is not the FakeQuant output.
  auto mismatches = [&](auto scale_of) {
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = size_t(r * cols + c);
        const float v = Bits(uint32_t(q[i]) << 16);
        bad += v != cpu::RoundToE4M3(v) || v * scale_of(r, c) != fake[i];
      }
    }
    return bad;
  };
  cpu::FakeQuantE4M3Tiles1x128(x.data(), fake.data(), s1.data(), rows, cols);
  cpu::QuantE4M3Tiles1x128(x.data(), q.data(), s2.data(), rows, cols);
  CHECK(s1 == s2);
  CHECK(mismatches([&](int64_t r, int64_t c) { return s2[size_t(r * 3 + c / 128)]; }) == 0);
  cpu::FakeQuantE4M3Blocks128x128(x.data(), fake.data(), s1.data(), rows, cols);
  cpu::QuantE4M3Blocks128x128(x.data(), q.data(), s2.data(), rows, cols);
  CHECK(s1 == s2);
  CHECK(mismatches([&](int64_t r, int64_t c) { return s2[size_t((r / 128) * 3 + c / 128)]; }) == 0);
  cpu::FakeQuantE4M3Tiles128x1(x.data(), fake.data(), s1.data(), rows, cols);
  cpu::QuantE4M3Tiles128x1(x.data(), q.data(), s2.data(), rows, cols);
  CHECK(s1 == s2);
  CHECK(mismatches([&](int64_t r, int64_t c) { return s2[size_t((r / 128) * cols + c)]; }) == 0);
  CHECK(q[17] != 0);  // the tiny value became an E4M3 subnormal, not zero
}

TEST_CASE("1x128 tiles: one scale per row per 128 columns, amax maps to 448") {
  const int64_t rows = 3, cols = 300;  // a ragged last tile
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> x(rows * cols), y(rows * cols), s(rows * 3);
  for (auto& v : x) v = n(rng);
  for (int64_t c = 0; c < 128; ++c) x[1 * cols + c] = 0.0f;  // an all-zero tile
  cpu::FakeQuantE4M3Tiles1x128(x.data(), y.data(), s.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < 3; ++t) {
      float amax = 0;
      for (int64_t c = t * 128; c < std::min(cols, t * 128 + 128); ++c)
        amax = std::max(amax, std::fabs(x[r * cols + c]));
      CHECK(s[r * 3 + t] == (amax > 0 ? amax / 448.0f : 1.0f));
      for (int64_t c = t * 128; c < std::min(cols, t * 128 + 128); ++c) {
        const float a = x[r * cols + c], b = y[r * cols + c];
        // Normal E4M3 keeps 3 mantissa bits: relative error at most 2^-4; tiny values
        // fall into subnormals with absolute error at most scale * 2^-10.
        CHECK(std::fabs(a - b) <=
              std::max(std::fabs(a) / 16.0f, s[r * 3 + t] * std::ldexp(1.0f, -10)) * 1.0001f);
      }
    }
  }
  for (int64_t c = 0; c < 128; ++c) CHECK(y[1 * cols + c] == 0.0f);
}

TEST_CASE("128x128 blocks: one scale per block") {
  const int64_t rows = 130, cols = 129;
  std::vector<float> x(rows * cols), y(rows * cols), s(2 * 2);
  for (int64_t i = 0; i < rows * cols; ++i) x[i] = std::sin(0.37f * float(i)) * float(1 + i % 5);
  x[5 * cols + 7] = -900.0f;  // dominates block (0, 0)
  cpu::FakeQuantE4M3Blocks128x128(x.data(), y.data(), s.data(), rows, cols);
  CHECK(s[0] == 900.0f / 448.0f);
  CHECK(y[5 * cols + 7] == -900.0f);
  CHECK(s[3] == doctest::Approx(5.0f / 448.0f).epsilon(0.01));  // the 2x1 corner block
}

TEST_CASE("128x1 tiles are 1x128 tiles of the transpose") {
  const int64_t rows = 300, cols = 5;  // a ragged last band
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> x(rows * cols), xt(rows * cols);
  for (auto& v : x) v = n(rng);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) xt[c * rows + r] = x[r * cols + c];
  std::vector<float> y(x.size()), yt(x.size()), s(3 * cols), st(cols * 3);
  cpu::FakeQuantE4M3Tiles128x1(x.data(), y.data(), s.data(), rows, cols);
  cpu::FakeQuantE4M3Tiles1x128(xt.data(), yt.data(), st.data(), cols, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) CHECK(y[r * cols + c] == yt[c * rows + r]);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < cols; ++c) CHECK(s[b * cols + c] == st[c * 3 + b]);
}
