// The coordinator's logic without sockets (tests/unit/coordinator_harness.h): placement,
// rendezvous, FIFO queue, dead daemons, restarts with a new generation, fencing of stale
// reports, reload from the store, bodies of the wrong shape, and per-step reports.
// Checkpoint commits and what recovery does with them: test_coordinator_recovery.cc.
#include <doctest/doctest.h>

#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "tests/unit/coordinator_harness.h"

namespace moerun::coordinator {
namespace {

TEST_CASE("a job is placed, meets at the rendezvous, runs and succeeds") {
  Harness h("happy");
  h.Beat("a", 2);
  const json reply = h.Submit("small");
  const std::string id = reply["job_id"];
  CHECK(id == "small-1");
  CHECK(reply["phase"] == "STARTING");
  CHECK(reply["run_dir"] == "/tmp/jobs/small-1");
  const Sent start = h.Last("worker:a", MessageType::kStartTrainers);
  CHECK(start.e.type == MessageType::kStartTrainers);
  CHECK(start.e.generation == 1);
  CHECK(start.e.body["ranks"] == json::array({0, 1}));
  h.c().Handle(Harness::Trainer(id, 1, 0),
               {MessageType::kRendezvous,
                1,
                id,
                "trainer",
                {{"rank", 0}, {"endpoint", "tcp://h:0"}, {"nccl_unique_id", "00ff"}}});
  CHECK(h.Job(id).state.phase() == JobPhase::kStarting);  // rank 1 has not come yet
  h.Rendezvous(id, 1, 1);
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  for (int r = 0; r < 2; ++r) {
    const Sent table = h.Last(Harness::Trainer(id, 1, r));
    CHECK(table.e.type == MessageType::kRendezvous);
    CHECK(table.e.body["endpoints"] == json::array({"tcp://h:0", "tcp://h:1"}));
    CHECK(table.e.body["nccl_unique_id"] == "00ff");  // rank 0's, handed to every rank
  }
  h.c().Handle(Harness::Trainer(id, 1, 0),
               {MessageType::kStepReport, 1, id, "t", {{"rank", 0}, {"step", 7}, {"loss", 2.5}}});
  CHECK(h.Job(id).progress["step"] == 7);
  h.Exit("a", id, 1, 0, 0);
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  h.Exit("a", id, 1, 1, 0);
  CHECK(h.Job(id).state.phase() == JobPhase::kSucceeded);
  // The exits are acknowledged so the daemon can forget them.
  CHECK(h.Last("worker:a").e.body["acked"].size() == 1);
}

TEST_CASE("the queue is FIFO: a job waits for slots and starts when they free up") {
  Harness h("fifo");
  h.Beat("a", 2);
  const std::string first = h.Submit("one")["job_id"];
  const json second = h.Submit("two");
  const json third = h.Submit("three");
  CHECK(second["phase"] == "QUEUED");
  CHECK(third["phase"] == "QUEUED");
  h.Rendezvous(first, 1, 0);
  h.Rendezvous(first, 1, 1);
  h.Exit("a", first, 1, 0, 0);
  h.Exit("a", first, 1, 1, 0);
  CHECK(h.Job(second["job_id"]).state.phase() == JobPhase::kStarting);
  CHECK(h.Job(third["job_id"]).state.phase() == JobPhase::kQueued);
}

TEST_CASE("a silent daemon fails its job; the restart goes to a live one with a new generation") {
  Harness h("dead");
  h.Beat("a", 2);
  const std::string id = h.Submit("small")["job_id"];
  h.Beat("b", 2);
  h.Rendezvous(id, 1, 0);
  h.Rendezvous(id, 1, 1);
  REQUIRE(h.Job(id).state.phase() == JobPhase::kRunning);
  for (int i = 0; i < 6; ++i) {  // b beats, a is silent
    h.Advance(1000);
    h.Beat("b", 2);
    h.c().Tick();
  }
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
  CHECK(h.Job(id).state.generation() == 2);
  CHECK(h.Job(id).state.events().back().cause.find("worker a") != std::string::npos);
  CHECK(h.Count(MessageType::kStopTrainers, "worker:a") == 1);
  h.Advance(1000);  // restart_backoff_ms
  h.c().Tick();
  const Sent start = h.Last("worker:b", MessageType::kStartTrainers);
  CHECK(start.e.type == MessageType::kStartTrainers);
  CHECK(start.e.generation == 2);
  CHECK(start.e.body["resume"] == true);
  // Generation 1 is over: its reports are dropped and its rendezvous refused.
  const uint64_t stale_before = h.c().counters().stale;
  h.c().Handle(Harness::Trainer(id, 1, 0),
               {MessageType::kStepReport, 1, id, "t", {{"rank", 0}, {"step", 99}}});
  CHECK(h.c().counters().stale == stale_before + 1);
  CHECK_FALSE(h.Job(id).progress.contains("step"));
  h.Rendezvous(id, 1, 0);
  CHECK(h.Last(Harness::Trainer(id, 1, 0)).e.type == MessageType::kError);
  h.Rendezvous(id, 2, 0);
  h.Rendezvous(id, 2, 1);
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  // A daemon still running a trainer of generation 1 is told to stop it.
  h.Beat(
      "a", 2,
      json::array({{{"job", id}, {"generation", 1}, {"rank", 0}, {"pid", 5}, {"running", true}}}));
  const Sent stop = h.Last("worker:a", MessageType::kStopTrainers);
  CHECK(stop.e.type == MessageType::kStopTrainers);
  CHECK(stop.e.body["below_generation"] == 2);
}

TEST_CASE("the wall clock stepped an hour either way declares no daemon or job dead") {
  Harness h("ntp");
  const std::string id = h.Running();
  int64_t step = 1;
  for (int64_t jump : {int64_t(3'600'000), int64_t(-7'200'000), int64_t(3'600'000)}) {
    h.clock.AdvanceMs(jump);        // NTP steps the wall clock; the monotonic timer does not move
    for (int i = 0; i < 10; ++i) {  // heartbeats and steps at their normal pace
      h.Advance(500);
      h.Beat("a", 2);
      h.Report(id, 1, 0, step);
      h.Report(id, 1, 1, step++);
      h.c().Tick();
    }
    CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
    CHECK(h.Job(id).state.generation() == 1);
    CHECK(h.c().workers().Find("a")->alive);
  }
  // The timer still decides: silence on it for the heartbeat timeout is a dead daemon.
  for (int i = 0; i < 6; ++i) {
    h.timer.AdvanceMs(1000);
    h.c().Tick();
  }
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
}

TEST_CASE("an exit the policy cannot retry fails the job at once") {
  Harness h("fatal");
  h.Beat("a", 2);
  const std::string id = h.Submit("small")["job_id"];
  h.Exit("a", id, 1, 1, 3);  // kExitBadData
  CHECK(h.Job(id).state.phase() == JobPhase::kFailed);
  CHECK(h.Job(id).state.events().back().cause.find("not retryable") != std::string::npos);
}

TEST_CASE("a restarted coordinator reloads its jobs and answers the rendezvous from the store") {
  Harness h("reload");
  const std::string id = h.Running();
  h.Report(id, 1, 0, 3);
  h.Reopen();
  CHECK(h.Job(id).state.phase() == JobPhase::kRunning);
  CHECK(h.Job(id).state.generation() == 1);
  CHECK(h.Job(id).progress["step"] == 3);
  CHECK(h.c().workers().Find("a") != nullptr);
  h.sent.clear();
  h.Rendezvous(id, 1, 1);  // a trainer that asks again after the restart
  CHECK(h.Last(Harness::Trainer(id, 1, 1)).e.body["endpoints"].size() == 2);
  // The daemon's heartbeat shows both ranks running: nothing is started again.
  h.Beat(
      "a", 2,
      json::array({{{"job", id}, {"generation", 1}, {"rank", 0}, {"pid", 5}, {"running", true}},
                   {{"job", id}, {"generation", 1}, {"rank", 1}, {"pid", 6}, {"running", true}}}));
  CHECK(h.Count(MessageType::kStartTrainers, "worker:a") == 0);
  // A new job id never repeats one from before the restart.
  CHECK(h.Submit("small")["job_id"] == "small-2");
}

TEST_CASE("bodies of the wrong shape are counted and answered, never fatal") {
  Harness h("shapes");
  h.c().Handle("worker:x", {MessageType::kHeartbeat, 0, "", "w", {{"host", 7}}});
  h.c().Handle("worker:x", {MessageType::kSubmitJob, 0, "", "w", json::object()});
  h.c().Handle("trainer:x:1:0", {MessageType::kStepReport, 1, "nope", "t", {{"rank", "0"}}});
  h.c().Handle("cli:1", {MessageType::kSubmitJob, 0, "", "cli", {{"spec_yaml", 5}}});
  h.c().Handle("cli:1", {MessageType::kQuery, 0, "", "cli", {{"what", "bogus"}}});
  CHECK(h.c().counters().invalid >= 4);
  CHECK(h.Last("cli:1").e.type == MessageType::kError);
  h.c().Handle("cli:1", {MessageType::kSubmitJob, 0, "", "cli", {{"spec_yaml", "job: {}\n"}}});
  const Sent bad = h.Last("cli:1");
  CHECK(bad.e.type == MessageType::kError);
  CHECK(bad.e.body["error"].get<std::string>().find("job.name") != std::string::npos);
  CHECK(h.c().workers().All().empty());
  CHECK(h.c().jobs().empty());
}

TEST_CASE(
    "every field of every body, replaced by every wrong kind of value: refused, never thrown") {
  Harness h("hostile");
  h.Beat("a", 4);
  const std::string id = h.Submit("hostile")["job_id"];
  const uint64_t gen = h.Job(id).state.generation();
  const json trainer = {{"job", id},       {"generation", gen}, {"rank", 0},   {"pid", 5},
                        {"running", true}, {"exit_code", 0},    {"signal", 0}, {"text", ""}};
  struct Base {
    std::string peer;
    MessageType type;
    std::string job;
    json body;
  };
  const std::vector<Base> bases = {
      {"worker:a",
       MessageType::kHeartbeat,
       "",
       {{"host", "a.example"},
        {"devices", 4},
        {"backend", "cpu"},
        {"data_host", "127.0.0.1"},
        {"pid", 100},
        {"seq", 2},
        {"trainers", json::array({trainer})}}},
      {"worker:a", MessageType::kTrainerExited, "", {{"trainers", json::array({trainer})}}},
      {"worker:a", MessageType::kReply, "", {{"request_id", "log-1"}, {"text", "x"}}},
      {Harness::Trainer(id, gen, 0),
       MessageType::kRendezvous,
       id,
       {{"rank", 0}, {"endpoint", "tcp://h:1"}, {"nccl_unique_id", ""}}},
      {Harness::Trainer(id, gen, 0),
       MessageType::kStepReport,
       id,
       {{"rank", 0},
        {"step", 3},
        {"loss", 2.0},
        {"compute_s", 0.1},
        {"val_loss", 2.0},
        {"expert_load", {{"1", {1, 2}}}}}},
      {Harness::Trainer(id, gen, 0),
       MessageType::kShardWritten,
       id,
       {{"rank", 0}, {"step", 2}, {"shard", "stage-0/dp-0"}, {"bytes", 10}}},
      {"cli:9",
       MessageType::kSubmitJob,
       "",
       {{"spec_yaml", "job: {}\n"}, {"steps", 5}, {"run_dir", "/r"}, {"resume", true}}},
      {"cli:9",
       MessageType::kQuery,
       id,
       {{"what", "expert_load"}, {"layer", "1"}, {"since_step", 0}, {"limit", 5}}},
      {"cli:9",
       MessageType::kQuery,
       "",
       {{"what", "log"}, {"job", id}, {"rank", 0}, {"offset", 0}, {"max_bytes", 9}}},
  };
  const std::vector<json> wrong = {
      nullptr,        "x", 1.5, -1, std::numeric_limits<uint64_t>::max(), json::array(),
      json::object(), true};
  int sent = 0;
  for (const Base& b : bases) {
    for (const auto& [key, value] : b.body.items()) {
      for (const json& w : wrong) {
        json body = b.body;
        body[key] = w;
        CAPTURE(body.dump());
        CHECK_NOTHROW(h.c().Handle(b.peer, {b.type, gen, b.job, "x", body}));
        ++sent;
      }
    }
    if (!b.body.contains("trainers")) continue;
    for (const auto& [key, value] : trainer.items()) {
      for (const json& w : wrong) {
        json body = b.body;
        body["trainers"][0][key] = w;
        CAPTURE(body.dump());
        CHECK_NOTHROW(h.c().Handle(b.peer, {b.type, gen, b.job, "x", body}));
        ++sent;
      }
    }
  }
  CHECK(sent > 300);
  CHECK(h.c().jobs().size() == 1);  // the spec in SubmitJob was invalid whenever it parsed
  CHECK(h.c().workers().All().size() == 1);
  CHECK(h.c().counters().invalid > 100);
}

TEST_CASE("a daemon that restarted fails the generation it was running") {
  Harness h("restarted");
  const std::string id = h.Running();
  h.Beat("a", 2, json::array(), {{"pid", 101}}, MessageType::kRegister);  // was 100
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
  CHECK(h.Job(id).state.events().back().cause.find("restarted") != std::string::npos);
}

TEST_CASE("step reports: every rank's time split, the newest held-out loss, worker health") {
  Harness h("observe");
  h.Beat("a", 2);
  const std::string id = h.Submit("watch")["job_id"];
  h.Rendezvous(id, 1, 0);
  h.Rendezvous(id, 1, 1);
  auto report = [&](int rank, int64_t step, json extra) {
    json body = {{"rank", rank},        {"step", step},
                 {"loss", 3.0},         {"compute_s", 0.5 + rank},
                 {"data_wait_s", 0.25}, {"bubble_s", 0.125}};
    body.update(extra);
    h.c().Handle(Harness::Trainer(id, 1, rank), {MessageType::kStepReport, 1, id, "t", body});
  };
  report(1, 10, json::object());
  report(0, 10, {{"val_loss", 2.75}, {"expert_load", {{"1", {1, 2}}, {"2", {5, 6}}}}});
  report(0, 11, {{"expert_load", {{"1", {3, 4}}, {"2", {7, 8}}}}});
  // Stored: the scalars per step, the expert load per layer beside them.
  h.c().Handle("cli:2", {MessageType::kQuery, 0, id, "cli", {{"what", "metrics"}}});
  const json metrics = h.Last("cli:2").e.body["metrics"];
  REQUIRE(metrics.size() == 2);
  CHECK(metrics[0]["loss"] == 3.0);
  CHECK_FALSE(metrics[0].contains("expert_load"));
  CHECK(metrics[0]["expert_layers"] == json::array({"1", "2"}));
  h.c().Handle("cli:2", {MessageType::kQuery,
                         0,
                         id,
                         "cli",
                         {{"what", "expert_load"}, {"layer", "2"}, {"since_step", 0}}});
  const json load = h.Last("cli:2").e.body;
  CHECK(load["steps"] == json::array({10, 11}));
  CHECK(load["load"][0] == json::array({5, 6}));
  CHECK(load["load"][1] == json::array({7, 8}));
  h.c().Handle("cli:2",
               {MessageType::kQuery, 0, id, "cli", {{"what", "expert_load"}, {"layer", "9"}}});
  CHECK(h.Last("cli:2").e.type == MessageType::kError);  // no such layer: named in the error
  // Live: the newest step in full, with both ranks' newest split (rank 1 is a step behind).
  h.c().Handle("cli:2", {MessageType::kQuery, 0, id, "cli", {{"what", "live"}}});
  const json live = h.Last("cli:2").e.body;
  CHECK(live["expert_load"]["2"] == json::array({7, 8}));
  const json ranks = live["ranks"];
  REQUIRE(ranks.size() == 2);
  CHECK(ranks[1]["compute_s"] == 1.5);
  CHECK(ranks[1]["step"] == 10);
  CHECK(ranks[0]["bubble_s"] == 0.125);
  // The held-out loss of step 10 stays in the summary after step 11, which had none.
  h.c().Handle("cli:2", {MessageType::kQuery, 0, id, "cli", {{"what", "job"}}});
  const json job = h.Last("cli:2").e.body;
  CHECK(job["val_loss"] == 2.75);
  CHECK(job["val_step"] == 10);
  CHECK(job["ranks"][1]["data_wait_s"] == 0.25);
  // A split of the wrong type drops the report whole: the rank's step does not move.
  const uint64_t invalid = h.c().counters().invalid;
  report(1, 12, {{"compute_s", "fast"}});
  CHECK(h.c().counters().invalid == invalid + 1);
  CHECK(h.Job(id).ranks[1].step == 10);
  // Steps outside the job and layer names that would break the store's keys are dropped too.
  report(0, 401, json::object());
  report(0, 0, json::object());
  report(0, 12, {{"expert_load", {{"1/5", {1, 2}}}}});
  CHECK(h.c().counters().invalid == invalid + 4);
  CHECK(h.Job(id).progress["step"] == 11);
  // Health: a daemon silent past half its timeout is late, then dead.
  h.Beat(
      "a", 2,
      json::array({{{"job", id}, {"generation", 1}, {"rank", 0}, {"pid", 7}, {"running", true}},
                   {{"job", id}, {"generation", 1}, {"rank", 1}, {"pid", 8}, {"running", true}}}));
  auto worker = [&] {
    h.c().Handle("cli:2", {MessageType::kQuery, 0, "", "cli", {{"what", "status"}}});
    return h.Last("cli:2").e.body["workers"][0];
  };
  CHECK(worker()["health"] == "ok");
  CHECK(worker()["trainers"] == 2);
  h.Advance(2500);  // half the 5 s timeout: still ok
  CHECK(worker()["health"] == "ok");
  h.Advance(100);
  CHECK(worker()["health"] == "late");
  h.Advance(3000);
  h.c().Tick();
  CHECK(worker()["health"] == "dead");
  CHECK(worker()["trainer_failures"] == 0);
}

}  // namespace
}  // namespace moerun::coordinator
