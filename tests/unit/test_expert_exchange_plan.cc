// PlanExpertExchange: the byte counts and the regrouping permutation both MoE layers (CPU
// and GPU) use under expert parallelism.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "worker/model/expert_exchange_plan.h"

namespace moerun::model {
namespace {

TEST_CASE("expert exchange: two members, two local experts each") {
  // This member sends 3, 1 rows to experts 0, 1 (member 0's) and 0, 2 to experts 2, 3.
  const std::vector<int64_t> send = {3, 1, 0, 2};
  // Member 0 sends our local experts 1 and 0 rows; member 1 sends 2 and 4.
  const std::vector<int64_t> recv = {1, 0, 2, 4};
  ExpertExchangePlan x;
  PlanExpertExchange(send.data(), recv.data(), 2, 2, 8, &x);
  CHECK(x.send_bytes == std::vector<size_t>{32, 16});
  CHECK(x.recv_bytes == std::vector<size_t>{8, 48});
  CHECK(x.received == 7);
  CHECK(x.local_counts == std::vector<int64_t>{3, 4});
  // Received: [m0 e0 r0] [m1 e0 r0 r1] [m1 e1 r0 r1 r2 r3] = rows 0 | 1 2 | 3 4 5 6.
  // Grouped: local expert 0 from member 0 then 1, then local expert 1 (member 1 only).
  CHECK(x.perm == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6});
}

TEST_CASE("expert exchange: source order inside each local expert") {
  const std::vector<int64_t> send = {0, 0, 0, 0, 0, 0};
  // Three members, two local experts: member j sends (j+1) rows to e0 and 1 row to e1.
  const std::vector<int64_t> recv = {1, 1, 2, 1, 3, 1};
  ExpertExchangePlan x;
  PlanExpertExchange(send.data(), recv.data(), 3, 2, 4, &x);
  // Received rows, source-major: m0: 0(e0) 1(e1); m1: 2 3(e0) 4(e1); m2: 5 6 7(e0) 8(e1).
  CHECK(x.perm == std::vector<int32_t>{0, 2, 3, 5, 6, 7, 1, 4, 8});
  CHECK(x.local_counts == std::vector<int64_t>{6, 3});
  CHECK(x.send_bytes == std::vector<size_t>{0, 0, 0});
  CHECK(x.recv_bytes == std::vector<size_t>{8, 12, 16});
}

TEST_CASE("expert exchange: an idle member and no rows at all") {
  const std::vector<int64_t> zeros = {0, 0, 0, 0};
  ExpertExchangePlan x;
  x.perm = {5, 6};  // storage is reused, its contents replaced
  PlanExpertExchange(zeros.data(), zeros.data(), 2, 2, 16, &x);
  CHECK(x.received == 0);
  CHECK(x.perm.empty());
  CHECK(x.local_counts == std::vector<int64_t>{0, 0});
  CHECK(x.send_bytes == std::vector<size_t>{0, 0});
}

TEST_CASE("expert exchange: random counts regroup every received row once, by expert") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int p = 1 + int(rng() % 5);
    const int64_t epr = 1 + int64_t(rng() % 4);
    std::vector<int64_t> send(size_t(p * epr)), recv(size_t(p * epr));
    for (auto& c : send) c = int64_t(rng() % 6);
    for (auto& c : recv) c = int64_t(rng() % 6);
    ExpertExchangePlan x;
    PlanExpertExchange(send.data(), recv.data(), p, epr, 4, &x);
    // Label each received row with (source, local expert) as the wire lays them out.
    std::vector<std::pair<int, int64_t>> label;
    for (int j = 0; j < p; ++j)
      for (int64_t le = 0; le < epr; ++le)
        for (int64_t i = 0; i < recv[size_t(j * epr + le)]; ++i) label.push_back({j, le});
    REQUIRE(int64_t(label.size()) == x.received);
    REQUIRE(x.perm.size() == label.size());
    std::vector<int> seen(label.size(), 0);
    int64_t row = 0;
    for (int64_t le = 0; le < epr; ++le) {
      int last_source = -1;
      int32_t last_row = -1;
      for (int64_t i = 0; i < x.local_counts[size_t(le)]; ++i, ++row) {
        const int32_t src_row = x.perm[size_t(row)];
        CHECK(label[size_t(src_row)].second == le);
        CHECK(label[size_t(src_row)].first >= last_source);  // source order
        CHECK(src_row > last_row);                           // arrival order within a source
        last_source = label[size_t(src_row)].first;
        last_row = src_row;
        ++seen[size_t(src_row)];
      }
    }
    for (int s : seen) CHECK(s == 1);
    for (int j = 0; j < p; ++j) {
      int64_t sent = 0;
      for (int64_t le = 0; le < epr; ++le) sent += send[size_t(j * epr + le)];
      CHECK(x.send_bytes[size_t(j)] == size_t(sent) * 4);
    }
  }
}

}  // namespace
}  // namespace moerun::model
