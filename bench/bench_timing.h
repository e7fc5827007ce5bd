// What the CPU benchmarks share: the median of timed runs after a warm-up, and fixed random
// inputs, so every bench reports the same statistic over the same kind of data.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

namespace moerun::bench {

// Median seconds of `reps` calls of f, after one warm-up call (page faults, thread pools).
template <typename F>
double MedianSeconds(int reps, F&& f) {
  using Clock = std::chrono::steady_clock;
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto s = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// n values drawn from Normal(0, std) with a fixed seed.
inline std::vector<float> RandomNormal(size_t n, uint32_t seed, float std) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace moerun::bench
