// ReplicaPartners: each rank's pinned snapshots are copied to a rank on another host, as a
// permutation (one send and one receive per rank), or to nobody.
#include <doctest/doctest.h>

#include <set>

#include "coordinator/scheduler/replica_partners.h"

namespace moerun::coordinator {
namespace {

// Every rank sends to one on another worker, and every rank receives exactly one copy.
void CheckRing(const std::vector<std::string>& placement, const std::vector<int>& to) {
  REQUIRE(to.size() == placement.size());
  std::set<int> receivers;
  for (size_t r = 0; r < to.size(); ++r) {
    REQUIRE(to[r] >= 0);
    CHECK(placement[size_t(to[r])] != placement[r]);
    receivers.insert(to[r]);
  }
  CHECK(receivers.size() == to.size());
  const std::vector<int> holders = ReplicaHolders(to);
  for (size_t r = 0; r < to.size(); ++r) CHECK(to[size_t(holders[r])] == int(r));
}

TEST_CASE("replica partners: the same place on the next host, round the hosts") {
  // The default job: ranks 0, 1 on local-0 and 2, 3 on local-1.
  const std::vector<std::string> two = {"local-0", "local-0", "local-1", "local-1"};
  CHECK(ReplicaPartners(two) == std::vector<int>{2, 3, 0, 1});
  CheckRing(two, ReplicaPartners(two));
  // Interleaved placement, three hosts: grouped by host first.
  const std::vector<std::string> three = {"b", "a", "c", "b", "a", "c"};
  const std::vector<int> to = ReplicaPartners(three);
  CHECK(to == std::vector<int>{1, 2, 0, 4, 5, 3});  // b -> a -> c -> b
  CheckRing(three, to);
}

TEST_CASE("replica partners: none on one host, or where a copy would stay on its host") {
  CHECK(ReplicaPartners({"a", "a", "a"}) == std::vector<int>{-1, -1, -1});
  CHECK(ReplicaPartners({}).empty());
  // 3 ranks on a, 1 on b: a's third rank would send to a.
  CHECK(ReplicaPartners({"a", "a", "a", "b"}) == std::vector<int>{-1, -1, -1, -1});
  CHECK(ReplicaHolders({-1, -1}) == std::vector<int>{-1, -1});
  // Unequal but possible: 2 on a, 2 on b, 1 on c (shift 2 round a a b b c).
  const std::vector<std::string> uneven = {"a", "a", "b", "b", "c"};
  CheckRing(uneven, ReplicaPartners(uneven));
}

}  // namespace
}  // namespace moerun::coordinator
