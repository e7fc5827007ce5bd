// Metric retention: which per-step reports the coordinator keeps, so a job's metrics stay
// bounded however long it runs (docs/architecture.md §9). The newest kMetricFullResolutionSteps
// steps are kept whole; older ones thin out geometrically: a report of age a in [R·2^k, R·2^(k+1))
// is kept only when its step is a multiple of 2^(k+1). Each such band keeps about R/2 reports, so a
// job of S steps keeps about R + R/2·log2(S/R): 6,144 at a million steps. The rule is monotone (a
// report dropped now would be dropped later too), so thinning can run at any time and in any order
// and lands on the same set.
#pragma once

#include <cstdint>

namespace moerun::coordinator {

inline constexpr int64_t kMetricFullResolutionSteps = 1024;  // R
inline constexpr int64_t kMetricThinEverySteps = 256;        // how often the store is thinned

// Whether the report of `step` stays once the newest report is `newest`.
inline bool KeepMetricStep(int64_t step, int64_t newest,
                           int64_t full_resolution = kMetricFullResolutionSteps) {
  const int64_t age = newest - step;
  if (age < full_resolution) return true;
  int64_t stride = 2;
  // band stops at 2^62: no overflow for any age.
  for (int64_t band = full_resolution * 2; age >= band && band <= (int64_t(1) << 61); band *= 2) {
    stride *= 2;
  }
  return step % stride == 0;
}

}  // namespace moerun::coordinator
