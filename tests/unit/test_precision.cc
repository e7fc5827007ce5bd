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
