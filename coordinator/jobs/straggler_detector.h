// StragglerDetector: names the ranks of one job generation that compute slower than their
// peers (docs/cluster.md, "Stragglers"), as Megatron-Core's straggler detector and MegaScale
// do. Fed each rank's compute time per step (the step time less data-plane waits and pipeline
// bubbles, so the ranks that wait for a straggler are not blamed), it compares the newest time
// with the median of the newest times of the rank's peers: the other ranks of its pipeline
// stage (they run the same layers), or every other rank when the stage has no other. More
// than `factor` x that median for `steps` reports in a row makes the rank a straggler; as
// many reports in a row at or below it make it one no more. Pure and single-threaded: the
// coordinator's loop owns one per running generation.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace moerun::coordinator {

struct StragglerChange {
  int rank = 0;
  bool straggler = false;  // true: it became one; false: it recovered
  double compute_s = 0;    // its newest compute time
  double peers_median_s = 0;
};

class StragglerDetector {
 public:
  // ranks = pipeline x data, rank r in stage r / data; steps 0 turns detection off.
  StragglerDetector(int64_t pipeline, int64_t data, double factor, int64_t steps);

  // Rank `rank` reported a step that took `compute_s` seconds of compute.
  std::optional<StragglerChange> Observe(int rank, double compute_s);
  bool IsStraggler(int rank) const { return straggler_[size_t(rank)]; }
  // Its newest compute time over its peers' median (0 until both are known).
  double Ratio(int rank) const { return ratio_[size_t(rank)]; }

 private:
  double PeersMedian(int rank) const;

  int64_t data_;
  double factor_;
  int64_t steps_;
  std::vector<double> latest_, ratio_;
  std::vector<int64_t> slow_in_a_row_, fine_in_a_row_;
  std::vector<bool> straggler_;
};

}  // namespace moerun::coordinator
