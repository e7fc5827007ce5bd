#include "coordinator/jobs/straggler_detector.h"

#include <algorithm>

namespace moerun::coordinator {

StragglerDetector::StragglerDetector(int64_t pipeline, int64_t data, double factor, int64_t steps)
    : data_(std::max<int64_t>(1, data)), factor_(factor), steps_(steps) {
  const size_t world = size_t(std::max<int64_t>(1, pipeline) * data_);
  latest_.assign(world, 0);
  ratio_.assign(world, 0);
  slow_in_a_row_.assign(world, 0);
  fine_in_a_row_.assign(world, 0);
  straggler_.assign(world, false);
}

double StragglerDetector::PeersMedian(int rank) const {
  std::vector<double> peers;
  const int64_t stage = rank / data_;
  for (int64_t r = stage * data_; r < (stage + 1) * data_; ++r)
    if (r != rank && latest_[size_t(r)] > 0) peers.push_back(latest_[size_t(r)]);
  if (peers.empty()) {
    for (size_t r = 0; r < latest_.size(); ++r)
      if (int(r) != rank && latest_[r] > 0) peers.push_back(latest_[r]);
  }
  if (peers.empty()) return 0;
  std::sort(peers.begin(), peers.end());
  const size_t n = peers.size();
  return n % 2 ? peers[n / 2] : (peers[n / 2 - 1] + peers[n / 2]) / 2;
}

std::optional<StragglerChange> StragglerDetector::Observe(int rank, double compute_s) {
  if (rank < 0 || size_t(rank) >= latest_.size() || !(compute_s > 0)) return std::nullopt;
  latest_[size_t(rank)] = compute_s;
  const double median = PeersMedian(rank);
  if (steps_ <= 0 || median <= 0) return std::nullopt;
  ratio_[size_t(rank)] = compute_s / median;
  const bool slow = compute_s > factor_ * median;
  int64_t& slow_n = slow_in_a_row_[size_t(rank)];
  int64_t& fine_n = fine_in_a_row_[size_t(rank)];
  slow_n = slow ? slow_n + 1 : 0;
  fine_n = slow ? 0 : fine_n + 1;
  const bool was = straggler_[size_t(rank)];
  if (!was && slow_n >= steps_) straggler_[size_t(rank)] = true;
  if (was && fine_n >= steps_) straggler_[size_t(rank)] = false;
  if (straggler_[size_t(rank)] == was) return std::nullopt;
  return StragglerChange{rank, !was, compute_s, median};
}

}  // namespace moerun::coordinator
