// ExpF (kernels/cpu/vector_math.h) against std::exp in double over its whole range, and at
// the edges where it departs from std::exp by design.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "kernels/cpu/vector_math.h"

namespace cpu = moerun::kernels::cpu;

TEST_CASE("ExpF is within 1.5e-7 of e^x from -87.3 to 88.3") {
  double worst = 0;
  float worst_x = 0;
  for (float x = -87.3f; x <= 88.3f; x = std::nextafter(x + 1e-4f * (1 + std::fabs(x)), 1e9f)) {
    const double want = std::exp(double(x));
    const double err = std::fabs(double(cpu::ExpF(x)) - want) / want;
    if (err > worst) {
      worst = err;
      worst_x = x;
    }
  }
  INFO("worst relative error " << worst << " at x = " << worst_x);
  CHECK(worst < 1.5e-7);
  CHECK(cpu::ExpF(0.0f) == 1.0f);
  CHECK(cpu::ExpF(1.0f) == doctest::Approx(2.718281828).epsilon(1e-7));
}

TEST_CASE("ExpF's edges: overflow to inf, underflow to 0, NaN through") {
  CHECK(std::isinf(cpu::ExpF(89.0f)));
  CHECK(std::isinf(cpu::ExpF(std::numeric_limits<float>::infinity())));
  CHECK(cpu::ExpF(-88.0f) == 0.0f);
  CHECK(cpu::ExpF(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(cpu::ExpF(std::numeric_limits<float>::quiet_NaN())));
  CHECK(cpu::ExpF(-87.3f) > 0.0f);
}
