// Finite-difference gradient checks in double precision for the CPU kernels' tests.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace moerun::testing {

inline std::vector<double> Random(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares `analytic` (d loss / d x) with central differences of `loss` as each x[i] moves.
// Relative error max(|a-n|) / max(1, |a|, |n|) must stay below `tol`.
inline void CheckGradient(const std::string& what, std::vector<double>& x,
                          const std::vector<double>& analytic, const std::function<double()>& loss,
                          double tol = 1e-6, double eps = 1e-6) {
  REQUIRE(x.size() == analytic.size());
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double up = loss();
    x[i] = keep - eps;
    const double down = loss();
    x[i] = keep;
    const double numeric = (up - down) / (2 * eps);
    const double err = std::fabs(numeric - analytic[i]) /
                       std::max({1.0, std::fabs(numeric), std::fabs(analytic[i])});
    if (err > worst) worst = err, worst_i = i;
  }
  INFO(what, ": worst relative error ", worst, " at index ", worst_i);
  CHECK(worst < tol);
}

}  // namespace moerun::testing
