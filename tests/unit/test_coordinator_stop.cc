// `moerun stop` in the coordinator (coordinator_stops.cc): the trainers are asked, over their
// control channels, to checkpoint and exit; the job ends STOPPED once they have, with the step
// their shards committed, and a failure while stopping ends the stop rather than restarting the
// job.
#include <doctest/doctest.h>

#include "common/timeouts.h"
#include "tests/unit/coordinator_harness.h"

namespace moerun::coordinator {
namespace {

void AskStop(Harness& h, const std::string& id, const std::string& reason = "preempted") {
  h.c().Handle("cli:2", {MessageType::kStopJob, 0, id, "cli", {{"reason", reason}}});
}

TEST_CASE("a stop: StopJob to every trainer, the step's shards commit, then STOPPED") {
  Harness h("stop-commit");
  const std::string id = h.Running();
  h.Report(id, 1, 0, 12);
  AskStop(h, id, "Slurm's warning");
  for (int rank : {0, 1}) {
    const Sent stop = h.Last(Harness::Trainer(id, 1, rank), MessageType::kStopJob);
    CHECK(stop.e.body["reason"] == "Slurm's warning");
  }
  CHECK(h.Count(MessageType::kStopTrainers, "worker:a") == 0);  // no signal: they stop themselves
  CHECK(h.Last("cli:2").e.body["stopping"] == true);
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  CHECK(h.Said(id, "stopping (Slurm's warning)"));
  // Asked again (the asker retries): the same stop answers, nothing new is sent.
  AskStop(h, id);
  CHECK(h.Count(MessageType::kStopJob, Harness::Trainer(id, 1, 0)) == 1);
  CHECK(h.Last("cli:2").e.body["stopping"] == true);

  // Both ranks checkpoint step 13 and exit 130; one shard report trails the exits.
  Shard(h, id, 1, 0, 13, "stage-0/dp-0");
  h.Exit("a", id, 1, 0, 130);
  h.Exit("a", id, 1, 1, 130);
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);  // waits for the trailing report
  h.Advance(100);
  h.c().Tick();
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  Shard(h, id, 1, 1, 13, "stage-1/dp-0");
  CHECK(h.Job(id).committed_step == 13);
  h.c().Tick();
  CHECK(h.Job(id).state.phase() == JobPhase::kStopped);
  CHECK(h.Job(id).state.restarts() == 0);
  CHECK(h.Said(id, "stopped (Slurm's warning): checkpoint step 13 committed; every rank exited"));
  // A stop of an ended job is refused with its phase.
  AskStop(h, id);
  CHECK(h.Last("cli:2").e.type == MessageType::kError);
  CHECK(h.Last("cli:2").e.body["error"].get<std::string>().find("already ended STOPPED") !=
        std::string::npos);
}

TEST_CASE("a stop whose shards never all arrive ends with the newest commit, after a short wait") {
  Harness h("stop-partial");
  const std::string id = h.Running();
  Shard(h, id, 1, 0, 10, "stage-0/dp-0");
  Shard(h, id, 1, 1, 10, "stage-1/dp-0");
  REQUIRE(h.Job(id).committed_step == 10);
  AskStop(h, id);
  Shard(h, id, 1, 0, 14, "stage-0/dp-0");  // the other writer died before its shard
  h.Exit("a", id, 1, 0, 130);
  h.Exit("a", id, 1, 1, 1);
  h.Advance(kStopShardWaitMs + 1);
  h.c().Tick();
  CHECK(h.Job(id).state.phase() == JobPhase::kStopped);
  CHECK(h.Said(id, "no new checkpoint; the newest committed is step 10"));
}

TEST_CASE("a failure while stopping ends the stop; a stop before the job runs ends it at once") {
  Harness h("stop-failure");
  const std::string id = h.Running();
  AskStop(h, id);
  h.Advance(6000);  // daemon a falls silent past the heartbeat timeout
  h.c().Tick();
  CHECK(h.Job(id).state.phase() == JobPhase::kStopped);
  CHECK(h.Job(id).state.restarts() == 0);
  CHECK(h.Said(id, "sent no heartbeat"));

  Harness q("stop-queued");
  const std::string queued = q.Submit("queued")["job_id"];  // no daemon: QUEUED
  REQUIRE(q.Job(queued).state.phase() == JobPhase::kQueued);
  AskStop(q, queued);
  CHECK(q.Job(queued).state.phase() == JobPhase::kStopped);
  CHECK(q.Said(queued, "no checkpoint committed; the job was QUEUED"));
}

TEST_CASE("a stop's reason is bounded; trainers that never exit are given up after the grace") {
  Harness h("stop-grace");
  const std::string id = h.Running();
  h.c().Handle("cli:3", {MessageType::kStopJob, 0, id, "cli", {{"reason", std::string(300, 'x')}}});
  CHECK(h.Last("cli:3").e.type == MessageType::kError);
  AskStop(h, id);
  // The daemon keeps beating and its trainers keep running.
  const json running =
      json::array({{{"job", id}, {"generation", 1}, {"rank", 0}, {"pid", 7}, {"running", true}},
                   {{"job", id}, {"generation", 1}, {"rank", 1}, {"pid", 8}, {"running", true}}});
  for (int64_t t = 0; t <= kStopCheckpointGraceMs + kStopShardWaitMs; t += 1000) {
    h.Beat("a", 2, running);
    h.Advance(1000);
    h.c().Tick();
  }
  CHECK(h.Job(id).state.phase() == JobPhase::kStopped);
  CHECK(h.Said(id, "2 rank(s) had not exited"));
  const Sent kill = h.Last("worker:a", MessageType::kStopTrainers);  // fenced at once
  CHECK(kill.e.body["grace_ms"] == kFenceGraceMs);
}

}  // namespace
}  // namespace moerun::coordinator
