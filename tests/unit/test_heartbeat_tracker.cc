// The failure detector, driven by a fake clock: nothing here sleeps.
#include <doctest/doctest.h>

#include "common/heartbeat_tracker.h"

using moerun::FakeClock;
using moerun::HeartbeatTracker;

TEST_CASE("a member silent past the timeout is declared dead once") {
  FakeClock clock(1000);
  std::vector<std::pair<std::string, int64_t>> dead;
  HeartbeatTracker t(&clock, 500,
                     [&](const std::string& m, int64_t silent) { dead.emplace_back(m, silent); });
  t.Beat("a");
  t.Beat("b");
  clock.AdvanceMs(300);
  t.Beat("b");
  CHECK(t.Check() == 0);
  clock.AdvanceMs(200);  // a: 500 ms silent, not more
  CHECK(t.Check() == 0);
  CHECK(t.AgeMs("a") == 500);
  CHECK(t.AgeMs("b") == 200);
  clock.AdvanceMs(1);
  CHECK(t.Check() == 1);
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].first == "a");
  CHECK(dead[0].second == 501);
  CHECK(t.AgeMs("a") == -1);
  CHECK(t.Check() == 0);  // not declared twice
  clock.AdvanceMs(1000);
  CHECK(t.Check() == 1);  // now b
  CHECK(dead.back().first == "b");
}

TEST_CASE("a member that left is never declared dead; one that returns is tracked again") {
  FakeClock clock;
  int fired = 0;
  HeartbeatTracker t(&clock, 100, [&](const std::string&, int64_t) { ++fired; });
  t.Beat("a");
  t.Forget("a");
  clock.AdvanceMs(1000);
  CHECK(t.Check() == 0);
  t.Beat("a");
  CHECK(t.Members() == std::vector<std::string>{"a"});
  clock.AdvanceMs(101);
  CHECK(t.Check() == 1);
  CHECK(fired == 1);
}

TEST_CASE("the callback may call back into the tracker") {
  FakeClock clock;
  HeartbeatTracker* self = nullptr;
  HeartbeatTracker t(&clock, 10,
                     [&](const std::string& m, int64_t) { self->Beat(m + "-replacement"); });
  self = &t;
  t.Beat("a");
  clock.AdvanceMs(11);
  CHECK(t.Check() == 1);
  CHECK(t.Members() == std::vector<std::string>{"a-replacement"});
}
