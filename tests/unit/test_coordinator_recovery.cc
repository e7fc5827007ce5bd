// The coordinator's two-phase checkpoint commit and what recovery does with it, without
// sockets (tests/unit/coordinator_harness.h): commits when every shard is in, restores and
// falls back, repeated and late shard reports, a job whose last step is committed, and a
// restart with no room.
#include <doctest/doctest.h>

#include <limits>

#include "tests/unit/coordinator_harness.h"

namespace moerun::coordinator {
namespace {

TEST_CASE("a checkpoint step commits only when every shard is in; restarts restore it") {
  Harness h("commit");
  h.Beat("a", 2);
  auto Wait = [&](int64_t ms) {  // time passes; the daemon keeps beating
    for (int64_t t = 0; t < ms; t += 500) {
      h.Advance(500);
      h.Beat("a", 2);
      h.c().Tick();
    }
  };
  const std::string id = h.Submit("small")["job_id"];  // 2 stages x 1 replica: 2 shards
  h.Rendezvous(id, 1, 0);
  h.Rendezvous(id, 1, 1);
  Shard(h, id, 1, 0, 10, "stage-0/dp-0");
  CHECK(h.Job(id).committed_step == 0);  // half a step is not a checkpoint
  CHECK(h.Count(MessageType::kCheckpointCommitted, Harness::Trainer(id, 1, 0)) == 0);
  Shard(h, id, 1, 1, 10, "stage-1/dp-0");
  CHECK(h.Job(id).committed_step == 10);
  // Every rank hears the commit: its writer may delete what it supersedes.
  for (int rank : {0, 1}) {
    const Sent told = h.Last(Harness::Trainer(id, 1, rank), MessageType::kCheckpointCommitted);
    CHECK(told.e.body == json{{"steps", {10}}});
    CHECK(told.e.generation == 1);
  }
  Shard(h, id, 1, 0, 20, "stage-0/dp-0");
  Shard(h, id, 1, 0, 20, "stage-7/dp-0");  // not a shard of this job
  CHECK(h.Job(id).committed_step == 10);
  // Retention: checkpoint.keep (2 in train-fast) committed steps.
  for (int64_t step : {20, 30, 40}) {
    Shard(h, id, 1, 0, step, "stage-0/dp-0");
    Shard(h, id, 1, 1, step, "stage-1/dp-0");
  }
  CHECK(h.Job(id).committed_step == 40);
  // The committed steps the job keeps, which is what the writers keep (and anything newer).
  CHECK(h.Last(Harness::Trainer(id, 1, 1), MessageType::kCheckpointCommitted).e.body ==
        json{{"steps", {30, 40}}});
  h.c().Handle(Harness::Trainer(id, 1, 0),
               {MessageType::kStepReport, 1, id, "t", {{"rank", 0}, {"step", 47}}});
  h.Exit("a", id, 1, 1, 1);
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
  CHECK(h.Job(id).lost_steps == 7);
  CHECK(h.Job(id).state.events().back().cause.find("7 steps to redo") != std::string::npos);
  Wait(1000);
  CHECK(h.Last("worker:a", MessageType::kStartTrainers).e.body["restore_step"] == 40);
  // Step 47 will be trained again: its report is gone, and the progress stepped back.
  CHECK(h.Job(id).progress.value("step", int64_t(0)) <= 40);
  h.c().Handle("cli:2", {MessageType::kQuery, 0, id, "cli", {{"what", "metrics"}}});
  CHECK(h.Last("cli:2").e.body["metrics"].empty());
  // Generation 2 cannot read step 40: it is dropped and generation 3 restores step 30.
  h.Exit("a", id, 2, 0, 5);  // kExitBadCheckpoint
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
  CHECK(h.Job(id).state.events().back().cause.find(
            "step 40 is unreadable; falling back to step 30 (10 more steps to redo)") !=
        std::string::npos);
  CHECK(h.Job(id).lost_steps == 17);
  Wait(5000);
  const Sent third = h.Last("worker:a", MessageType::kStartTrainers);
  CHECK(third.e.generation == 3);
  CHECK(third.e.body["restore_step"] == 30);
  // Then step 30 is bad too: nothing committed is left, so the trainers pick what is on disk.
  h.Exit("a", id, 3, 1, 5);
  Wait(5000);
  CHECK(h.Last("worker:a", MessageType::kStartTrainers).e.body["restore_step"] == -1);
}

TEST_CASE("shard reports repeated after a coordinator restart still commit their step") {
  Harness h("resent-shards");
  const std::string id = h.Running();
  Shard(h, id, 1, 0, 50, "stage-0/dp-0");
  h.Reopen();  // the coordinator restarts: what it had heard of step 50 is gone
  h.Beat("a", 2);
  CHECK(h.Job(id).committed_step == 0);
  Shard(h, id, 1, 1, 50, "stage-1/dp-0");  // the other writer's report reaches the new one
  CHECK(h.Job(id).committed_step == 0);
  Shard(h, id, 1, 0, 50, "stage-0/dp-0");  // rank 0 repeats its report with its next step
  CHECK(h.Job(id).committed_step == 50);
  // This coordinator never met rank 1 at a rendezvous: it tells it of the commit when rank 1
  // repeats its report (it repeats until it hears), and counts the repeat as nothing wrong.
  const std::string rank1 = Harness::Trainer(id, 1, 1);
  CHECK(h.Count(MessageType::kCheckpointCommitted, rank1) == 0);
  const uint64_t stale = h.c().counters().stale;
  Shard(h, id, 1, 1, 50, "stage-1/dp-0");
  CHECK(h.c().counters().stale == stale);
  CHECK(h.Job(id).committed_step == 50);
  CHECK(h.Last(rank1, MessageType::kCheckpointCommitted).e.body == json{{"steps", {50}}});
}

TEST_CASE("the last shards of a run still commit after the job SUCCEEDED") {
  Harness h("late");
  const std::string id = h.Running();
  h.Exit("a", id, 1, 0, 0);
  h.Exit("a", id, 1, 1, 0);
  REQUIRE(h.Job(id).state.phase() == JobPhase::kSucceeded);
  Shard(h, id, 1, 0, 40, "stage-0/dp-0");
  Shard(h, id, 1, 1, 40, "stage-1/dp-0");
  CHECK(h.Job(id).committed_step == 40);
}

TEST_CASE("a job whose last step is committed SUCCEEDS whatever happens to its daemons after") {
  for (const bool daemon_stops : {true, false}) {
    CAPTURE(daemon_stops);
    Harness h(daemon_stops ? "done-then-silent" : "done-then-crash");
    const std::string id = h.Running();
    h.Report(id, 1, 0, 400);
    Shard(h, id, 1, 0, 400, "stage-0/dp-0");
    Shard(h, id, 1, 1, 400, "stage-1/dp-0");
    REQUIRE(h.Job(id).committed_step == 400);
    CHECK(h.Job(id).state.phase() == JobPhase::kRunning);  // the ranks have not exited yet
    if (daemon_stops) {
      for (int i = 0; i < 7; ++i) {  // a stopped daemon: no heartbeat, no exit reports
        h.Advance(1000);
        h.c().Tick();
      }
    } else {
      h.Exit("a", id, 1, 0, 1);  // a crash on the way out
    }
    CHECK(h.Job(id).state.phase() == JobPhase::kSucceeded);
    CHECK(h.Job(id).state.generation() == 1);  // no restart
    CHECK(h.Job(id).state.events().back().cause.find(
              "checkpoint step 400 (the last) is committed; after it: ") != std::string::npos);
    const Sent stop = h.Last("worker:a", MessageType::kStopTrainers);
    CHECK(stop.e.body["below_generation"] == std::numeric_limits<uint64_t>::max());
  }
}

TEST_CASE("a restart with no room says what it waits for, then fails after capacity_timeout_ms") {
  for (const bool capacity_returns : {false, true}) {
    CAPTURE(capacity_returns);
    Harness h(capacity_returns ? "room-returns" : "no-room");
    const std::string id = h.Running();
    for (int i = 0; i < 7; ++i) {  // the only daemon goes silent (SIGSTOP): no room anywhere
      h.Advance(1000);
      h.c().Tick();
    }
    REQUIRE(h.Job(id).state.phase() == JobPhase::kRecovering);
    CHECK(h.Job(id).waiting_for == "waiting for 2 slots, 0 usable: worker a DEAD");
    const JobEvent& note = h.Job(id).state.events().back();
    CHECK(note.from == JobPhase::kRecovering);
    CHECK(note.to == JobPhase::kRecovering);
    CHECK(note.cause.find("fails after 600000 ms") != std::string::npos);
    const size_t events = h.Job(id).state.events().size();
    h.Advance(1000);
    h.c().Tick();
    CHECK(h.Job(id).state.events().size() == events);  // said once, not every tick
    h.c().Handle("cli:9", {MessageType::kQuery, 0, "", "cli", {{"what", "status"}}});
    const json jobs = h.Last("cli:9").e.body["jobs"];
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0]["waiting_for"] == "waiting for 2 slots, 0 usable: worker a DEAD");
    CHECK(jobs[0]["waiting_s"].get<double>() >= 1.0);
    if (capacity_returns) {  // SIGCONT: the daemon beats again and the restart goes out
      h.Advance(60'000);
      h.c().Tick();
      h.Beat("a", 2);
      CHECK(h.Last("worker:a", MessageType::kStartTrainers).e.generation == 2);
      CHECK(h.Job(id).waiting_for.empty());
      continue;
    }
    for (int i = 0; i < 600; ++i) {
      h.Advance(1000);
      h.c().Tick();
    }
    CHECK(h.Job(id).state.phase() == JobPhase::kFailed);
    CHECK(h.Job(id).state.events().back().cause ==
          "no room to restart for 600000 ms (fault_tolerance.capacity_timeout_ms): waiting for 2 "
          "slots, 0 usable: worker a DEAD (not retryable)");
  }
}

}  // namespace
}  // namespace moerun::coordinator
