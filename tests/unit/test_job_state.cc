// The job state machine: legal and illegal transitions, restart bound and backoff, events,
// and the stored form (round trip, refusal of what cannot be read).
#include <doctest/doctest.h>

#include "coordinator/jobs/job_state.h"

using moerun::Status;
using moerun::coordinator::JobPhase;
using moerun::coordinator::JobState;

TEST_CASE("the happy path and its events") {
  JobState j("tiny", {3, 1000, 30000}, 10);
  CHECK(j.phase() == JobPhase::kQueued);
  REQUIRE(j.Start(20, "placed on 2 daemons").ok());
  CHECK(j.generation() == 1);
  REQUIRE(j.Running(30, "rendezvous complete").ok());
  REQUIRE(j.Succeed(40, "step 300 of 300").ok());
  CHECK(j.phase() == JobPhase::kSucceeded);
  REQUIRE(j.events().size() == 4);
  CHECK(j.events()[3].from == JobPhase::kRunning);
  CHECK(j.events()[3].cause == "step 300 of 300");
  CHECK(j.events()[3].time_ms == 40);
  // Terminal: nothing more.
  CHECK(j.Cancel(50, "too late").code() == Status::Code::kFailedPrecondition);
  CHECK(j.Fail(50, "late failure").code() == Status::Code::kFailedPrecondition);
}

TEST_CASE("failures restart with exponential backoff and a new generation, up to the bound") {
  JobState j("tiny", {3, 1000, 2500}, 0);
  REQUIRE(j.Start(0, "start").ok());
  REQUIRE(j.Running(0, "up").ok());
  int64_t now = 100;
  const int64_t expected_backoff[] = {1000, 2000, 2500};
  for (int i = 0; i < 3; ++i) {
    REQUIRE(j.Fail(now, "rank 1 exited with signal 9", 1, "host-b").ok());
    CHECK(j.phase() == JobPhase::kRecovering);
    CHECK(j.restarts() == i + 1);
    CHECK(j.generation() == uint64_t(i + 2));
    CHECK(j.restart_not_before_ms() == now + expected_backoff[i]);
    CHECK(j.Running(now + expected_backoff[i] - 1, "too soon").code() ==
          Status::Code::kFailedPrecondition);
    now += expected_backoff[i];
    REQUIRE(j.Running(now, "restored step 40").ok());
  }
  REQUIRE(j.Fail(now, "rank 2 hung").ok());
  CHECK(j.phase() == JobPhase::kFailed);
  CHECK(j.events().back().cause == "rank 2 hung (all 3 restarts used)");
  CHECK(j.events()[3].to == JobPhase::kRecovering);
  CHECK(j.events()[3].rank == 1);
  CHECK(j.events()[3].host == "host-b");
}

TEST_CASE("a generation that trained a step restarts at once and resets the backoff") {
  JobState j("tiny", {10, 1000, 30000}, 0);
  REQUIRE(j.Start(0, "start").ok());
  REQUIRE(j.Running(0, "up").ok());
  // Two failures in a row before any step: 1000, then 2000 ms.
  REQUIRE(j.Fail(100, "rank 0 crashed at start").ok());
  CHECK(j.restart_not_before_ms() == 1100);
  REQUIRE(j.Running(1100, "up").ok());
  REQUIRE(j.Fail(1200, "rank 0 crashed at start").ok());
  CHECK(j.restart_not_before_ms() == 3200);
  REQUIRE(j.Running(3200, "up").ok());
  // This generation trains: its failure restarts at once.
  j.Trained();
  REQUIRE(j.Fail(5000, "rank 3 killed by signal 9").ok());
  CHECK(j.restart_not_before_ms() == 5000);
  REQUIRE(j.Running(5000, "up").ok());
  // The next generation trains nothing: the count starts over at 1000 ms, not 4000.
  REQUIRE(j.Fail(5100, "rank 3 crashed at start").ok());
  CHECK(j.restart_not_before_ms() == 6100);
  // Both counts outlive a coordinator restart.
  auto back = JobState::FromJson(j.ToJson());
  REQUIRE(back.ok());
  REQUIRE(back->Running(6100, "up").ok());
  REQUIRE(back->Fail(6200, "again").ok());
  CHECK(back->restart_not_before_ms() == 8200);
  CHECK(back->restarts() == 5);
}

TEST_CASE("a failure that cannot succeed on retry fails the job at once") {
  JobState j("tiny", {10, 1, 1}, 0);
  REQUIRE(j.Start(0, "s").ok());
  REQUIRE(j.Fail(5, "rank 0 exited with code 3: data missing", 0, "", true).ok());
  CHECK(j.phase() == JobPhase::kFailed);
  CHECK(j.restarts() == 0);
}

TEST_CASE("illegal transitions name both states") {
  JobState j("tiny", {}, 0);
  Status s = j.Succeed(1, "x");
  CHECK(s.message() == "job tiny: cannot succeed from QUEUED");
  CHECK(j.Running(1, "x").message() == "job tiny: cannot run from QUEUED");
  REQUIRE(j.Cancel(2, "user").ok());
  CHECK(j.phase() == JobPhase::kCancelled);
}

TEST_CASE("stored state round-trips and unreadable state is refused") {
  JobState j("tiny", {2, 100, 400}, 0);
  REQUIRE(j.Start(1, "s").ok());
  REQUIRE(j.Running(2, "r").ok());
  REQUIRE(j.Fail(3, "rank 3 gone", 3, "host-c").ok());
  auto back = JobState::FromJson(j.ToJson());
  REQUIRE(back.ok());
  CHECK(back->ToJson() == j.ToJson());
  CHECK(back->phase() == JobPhase::kRecovering);
  auto future = j.ToJson();
  future["version"] = 2;
  CHECK(JobState::FromJson(future).status().message() ==
        "stored job state: format version 2; this build reads 1");
  auto broken = j.ToJson();
  broken["events"][0].erase("cause");
  CHECK(JobState::FromJson(broken).status().code() == Status::Code::kCorruption);
  auto phase = j.ToJson();
  phase["phase"] = "DANCING";
  CHECK(JobState::FromJson(phase).status().message() == "stored job state: unknown phase");
}
