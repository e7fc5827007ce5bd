#include "coordinator/scheduler/rank_placer.h"

#include <algorithm>
#include <set>

namespace moerun::coordinator {

std::optional<std::vector<std::string>> PlaceRanks(const PlacementRequest& req) {
  if (req.world <= 0 || req.expert <= 0 || req.world % req.expert != 0) return std::nullopt;
  std::vector<std::string> out(size_t(req.world));
  std::map<std::string, int64_t> free = req.free_slots;
  std::set<std::string> used;
  int64_t to_place = 0;
  for (int64_t r = 0; r < req.world; ++r) {
    if (size_t(r) < req.pinned.size() && !req.pinned[size_t(r)].empty()) {
      out[size_t(r)] = req.pinned[size_t(r)];
      used.insert(out[size_t(r)]);
    } else {
      ++to_place;
    }
  }
  int64_t total_free = 0;
  for (const auto& [id, n] : free) total_free += std::max<int64_t>(0, n);
  if (total_free < to_place) return std::nullopt;

  for (int64_t g = 0; g < req.world / req.expert; ++g) {
    std::vector<int64_t> open;  // ranks of this group still without a worker
    for (int64_t r = g * req.expert; r < (g + 1) * req.expert; ++r) {
      if (out[size_t(r)].empty()) open.push_back(r);
    }
    if (open.empty()) continue;
    const int64_t need = int64_t(open.size());
    // Best fit among workers that hold the whole rest of the group; a worker the job already
    // uses wins a tie, then the id order.
    std::string best;
    for (const auto& [id, n] : free) {
      if (n < need) continue;
      if (best.empty()) {
        best = id;
        continue;
      }
      const int64_t bn = free[best];
      const bool better = n < bn || (n == bn && used.count(id) && !used.count(best));
      if (better) best = id;
    }
    if (!best.empty()) {
      for (int64_t r : open) out[size_t(r)] = best;
      free[best] -= need;
      used.insert(best);
      continue;
    }
    // Split: fill the workers with most free slots first, so the group touches as few hosts
    // as possible.
    std::vector<std::pair<std::string, int64_t>> order(free.begin(), free.end());
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    size_t next = 0;
    for (const auto& [id, n] : order) {
      int64_t taken = 0;
      for (; taken < n && next < open.size(); ++taken) out[size_t(open[next++])] = id;
      if (taken > 0) used.insert(id);
      free[id] = n - taken;
      if (next == open.size()) break;
    }
  }
  return out;
}

}  // namespace moerun::coordinator
