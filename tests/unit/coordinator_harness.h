// The coordinator driven without sockets, for its unit tests (test_coordinator.cc,
// test_coordinator_recovery.cc): messages in, envelopes out, a fake wall clock and timer
// stepped by hand, the store in a fresh temporary directory.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "coordinator/service/coordinator.h"
#include "tests/spec_text.h"
#include "tests/temp_path.h"

namespace moerun::coordinator {

using json = nlohmann::json;

struct Sent {
  std::string peer;
  Envelope e;
};

class Harness {
 public:
  explicit Harness(const std::string& name)
      : dir_(testing::FreshTempPath("coordinator", name, false)) {
    Reopen();
  }
  void Reopen() {
    coordinator_.reset();
    store_.reset();
    store_ = std::move(CoordinatorStore::Open(dir_).value());
    CoordinatorSettings settings;
    settings.heartbeat_interval_ms = 1000;
    settings.heartbeat_timeout_ms = 5000;
    settings.jobs_dir = "/tmp/jobs";
    auto c = Coordinator::Open(store_.get(), &clock, &timer, settings,
                               [this](const std::string& peer, const Envelope& e) {
                                 sent.push_back({peer, e});
                                 return true;
                               });
    REQUIRE(c.ok());
    coordinator_ = std::move(c.value());
  }
  Coordinator& c() { return *coordinator_; }

  // A heartbeat (or Register) of daemon `worker`, pid 100; `extra` fields added or replaced.
  void Beat(const std::string& worker, int slots, json trainers = json::array(),
            json extra = json::object(), MessageType type = MessageType::kHeartbeat) {
    json body = {{"host", worker + ".example"}, {"devices", slots}, {"backend", "cpu"},
                 {"data_host", "127.0.0.1"},    {"pid", 100},       {"trainers", trainers}};
    body.update(extra);
    c().Handle("worker:" + worker, {type, 0, "", "worker:" + worker, body});
  }
  json Submit(const std::string& name) {
    // 400 steps: room for the step numbers these tests report (the coordinator drops reports
    // past a job's last step).
    std::string spec = testing::WorldTwoSpecText(name);
    const size_t at = spec.find("steps: 40\n");
    REQUIRE(at != std::string::npos);
    spec.replace(at, 10, "steps: 400\n");
    c().Handle("cli:1", {MessageType::kSubmitJob, 0, "", "cli", {{"spec_yaml", spec}}});
    return Last("cli:1").e.body;
  }
  void Rendezvous(const std::string& job, uint64_t gen, int rank) {
    c().Handle(Trainer(job, gen, rank),
               {MessageType::kRendezvous,
                gen,
                job,
                "trainer",
                {{"rank", rank}, {"endpoint", "tcp://h:" + std::to_string(rank)}}});
  }
  // Worker `a` with 2 slots, a "small" job on it, both ranks met: the job is RUNNING.
  std::string Running() {
    Beat("a", 2);
    const std::string id = Submit("small")["job_id"];
    Rendezvous(id, 1, 0);
    Rendezvous(id, 1, 1);
    REQUIRE(Job(id).state.phase() == JobPhase::kRunning);
    return id;
  }
  void Report(const std::string& job, uint64_t gen, int rank, int64_t step) {
    c().Handle(Trainer(job, gen, rank),
               {MessageType::kStepReport, gen, job, "t", {{"rank", rank}, {"step", step}}});
  }
  void Exit(const std::string& worker, const std::string& job, uint64_t gen, int rank, int code) {
    c().Handle("worker:" + worker, {MessageType::kTrainerExited,
                                    0,
                                    "",
                                    "worker:" + worker,
                                    {{"trainers", json::array({{{"job", job},
                                                                {"generation", gen},
                                                                {"rank", rank},
                                                                {"pid", 1},
                                                                {"running", false},
                                                                {"exit_code", code},
                                                                {"signal", 0}}})}}});
  }
  static std::string Trainer(const std::string& job, uint64_t gen, int rank) {
    return "trainer:" + job + ":" + std::to_string(gen) + ":" + std::to_string(rank);
  }
  Sent Last(const std::string& peer, std::optional<MessageType> type = std::nullopt) {
    for (auto it = sent.rbegin(); it != sent.rend(); ++it)
      if (it->peer == peer && (!type || it->e.type == *type)) return *it;
    FAIL("nothing sent to " << peer);
    return {};
  }
  int Count(MessageType t, const std::string& peer) const {
    int n = 0;
    for (const auto& s : sent) n += s.e.type == t && s.peer == peer;
    return n;
  }
  const JobRun& Job(const std::string& id) { return c().jobs().at(id); }
  // Whether any of the job's events says `text` (a restart that needs no backoff begins in the
  // same call that recorded its cause, so the cause need not be the last event).
  bool Said(const std::string& id, const std::string& text) {
    for (const auto& e : Job(id).state.events())
      if (e.cause.find(text) != std::string::npos) return true;
    return false;
  }

  // The wall clock and the monotonic timer, stepped together by Advance; a test may step the
  // wall alone, as NTP does.
  void Advance(int64_t ms) {
    clock.AdvanceMs(ms);
    timer.AdvanceMs(ms);
  }
  FakeClock clock{1'700'000'000'000};
  FakeClock timer{5'000'000};
  std::vector<Sent> sent;

 private:
  std::string dir_;
  std::unique_ptr<CoordinatorStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

// A writer rank's ShardWritten for `shard` of `step`.
inline void Shard(Harness& h, const std::string& id, uint64_t gen, int rank, int64_t step,
                  const std::string& shard) {
  h.c().Handle(Harness::Trainer(id, gen, rank),
               {MessageType::kShardWritten,
                gen,
                id,
                "t",
                {{"rank", rank}, {"step", step}, {"shard", shard}, {"bytes", 1000}}});
}

}  // namespace moerun::coordinator
