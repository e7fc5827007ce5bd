// StragglerDetector (coordinator/jobs/straggler_detector.h): peers are the rank's stage, a
// straggler needs `steps` slow reports in a row, and recovers after as many normal ones.
#include <doctest/doctest.h>

#include "coordinator/jobs/straggler_detector.h"

namespace moerun::coordinator {
namespace {

TEST_CASE("a rank slower than its stage's median for N reports in a row, and its recovery") {
  StragglerDetector d(/*pipeline=*/2, /*data=*/3, /*factor=*/1.5, /*steps=*/3);
  // Stage 0 (ranks 0-2) computes 0.1 s, stage 1 (3-5) 0.3 s: the stages differ, no one straggles.
  auto round = [&](double slow_rank_time) {
    std::optional<StragglerChange> change;
    for (int r = 0; r < 6; ++r) {
      const double t = r == 1 ? slow_rank_time : r < 3 ? 0.1 : 0.3;
      if (auto c = d.Observe(r, t)) change = c;
    }
    return change;
  };
  for (int i = 0; i < 5; ++i) CHECK(!round(0.1));
  CHECK(!d.IsStraggler(1));
  CHECK(!round(0.2));  // 2x, twice: not yet
  CHECK(!round(0.2));
  auto became = round(0.2);
  REQUIRE(became);
  CHECK(became->rank == 1);
  CHECK(became->straggler);
  CHECK(became->peers_median_s == doctest::Approx(0.1));
  CHECK(d.IsStraggler(1));
  CHECK(d.Ratio(1) == doctest::Approx(2.0));
  for (int r : {0, 2, 3, 4, 5}) CHECK(!d.IsStraggler(r));
  CHECK(!round(0.12));  // back at 1.2x: recovers after three in a row
  CHECK(!round(0.3));   // a slow one starts the count over
  CHECK(!round(0.12));
  CHECK(!round(0.12));
  auto recovered = round(0.12);
  REQUIRE(recovered);
  CHECK(!recovered->straggler);
  CHECK(!d.IsStraggler(1));
}

TEST_CASE("a stage of one rank compares with every other rank; steps 0 detects nothing") {
  StragglerDetector d(2, 1, 1.5, 2);
  CHECK(!d.Observe(0, 0.5));  // no peer yet
  CHECK(!d.Observe(1, 0.1));
  auto c = d.Observe(0, 0.5);
  CHECK(!c);  // one slow report so far (the first had no median)
  c = d.Observe(0, 0.5);
  REQUIRE(c);
  CHECK(c->rank == 0);
  CHECK(!d.Observe(7, 1.0));   // no such rank
  CHECK(!d.Observe(1, -1.0));  // no time: ignored
  StragglerDetector off(2, 1, 1.5, 0);
  for (int i = 0; i < 10; ++i) {
    CHECK(!off.Observe(0, 1.0));
    CHECK(!off.Observe(1, 0.1));
  }
  CHECK(!off.IsStraggler(0));
}

}  // namespace
}  // namespace moerun::coordinator
