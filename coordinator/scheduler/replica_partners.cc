#include "coordinator/scheduler/replica_partners.h"

#include <algorithm>
#include <map>

namespace moerun::coordinator {

std::vector<int> ReplicaPartners(const std::vector<std::string>& placement) {
  const size_t n = placement.size();
  std::vector<int> to(n, -1);
  std::vector<std::string> workers;  // in order of first appearance
  std::map<std::string, std::vector<int>> ranks_on;
  for (size_t r = 0; r < n; ++r) {
    if (!ranks_on.count(placement[r])) workers.push_back(placement[r]);
    ranks_on[placement[r]].push_back(int(r));
  }
  if (workers.size() < 2) return to;
  std::vector<int> order;
  size_t group = 0;
  for (const auto& w : workers) {
    order.insert(order.end(), ranks_on[w].begin(), ranks_on[w].end());
    group = std::max(group, ranks_on[w].size());
  }
  for (size_t i = 0; i < n; ++i) {
    const int from = order[i], into = order[(i + group) % n];
    if (placement[size_t(from)] == placement[size_t(into)]) return std::vector<int>(n, -1);
    to[size_t(from)] = into;
  }
  return to;
}

std::vector<int> ReplicaHolders(const std::vector<int>& to) {
  std::vector<int> holder(to.size(), -1);
  for (size_t r = 0; r < to.size(); ++r)
    if (to[r] >= 0 && size_t(to[r]) < to.size()) holder[size_t(to[r])] = int(r);
  return holder;
}

}  // namespace moerun::coordinator
