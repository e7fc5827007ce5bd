// Typed control-plane bodies (common/message_bodies.h): what each accepts, and a refusal that
// names the message and the field for everything else.
#include <doctest/doctest.h>

#include "common/limits.h"
#include "common/message_bodies.h"

namespace moerun {
namespace {

using nlohmann::json;

json Heartbeat() {
  return {{"host", "h"},
          {"devices", 2},
          {"backend", "cpu"},
          {"data_host", "127.0.0.1"},
          {"pid", 42},
          {"seq", 7},
          {"trainers", json::array({{{"job", "j-1"},
                                     {"generation", 3},
                                     {"rank", 1},
                                     {"pid", 99},
                                     {"running", false},
                                     {"exit_code", 1},
                                     {"signal", 9},
                                     {"text", "boom"}}})}};
}

TEST_CASE("bodies: a well-formed heartbeat, step report and query read back whole") {
  auto w = WorkerStatusBody::FromJson(Heartbeat(), "Heartbeat");
  REQUIRE(w.ok());
  CHECK(w->devices == 2);
  CHECK(w->seq == 7);
  REQUIRE(w->trainers.size() == 1);
  CHECK(w->trainers[0].job == "j-1");
  CHECK(w->trainers[0].generation == 3);
  CHECK(w->trainers[0].signal == 9);
  CHECK(w->trainers[0].text == "boom");
  auto r = StepReportBody::FromJson({{"rank", 0},
                                     {"step", 12},
                                     {"loss", 2.5},
                                     {"val_loss", 2.25},
                                     {"bubble_s", 0.5},
                                     {"expert_load", {{"3", {4, 5}}}}});
  REQUIRE(r.ok());
  CHECK(r->val_loss == 2.25);
  CHECK(r->bubble_s == 0.5);
  CHECK(r->expert_load.at("3") == std::vector<int64_t>{4, 5});
  CHECK_FALSE(r->scalars.contains("expert_load"));
  CHECK(r->scalars["loss"] == 2.5);
  auto q = QueryBody::FromJson({{"what", "metrics"}});
  REQUIRE(q.ok());
  CHECK(q->limit == std::numeric_limits<int64_t>::max());  // absent: the coordinator's maximum
}

TEST_CASE("bodies: each problem is refused with the message and field named") {
  struct Case {
    json body;
    const char* message;
  };
  json wrong_type = Heartbeat();
  wrong_type["devices"] = "two";
  json too_many = Heartbeat();
  too_many["devices"] = 5000;
  json trainer_bad = Heartbeat();
  trainer_bad["trainers"][0]["running"] = 1;
  json trainer_gone = Heartbeat();
  trainer_gone["trainers"][0].erase("exit_code");
  json huge = Heartbeat();
  huge["pid"] = std::numeric_limits<uint64_t>::max();
  const Case cases[] = {
      {wrong_type, "Heartbeat: 'devices' must be an integer, not string"},
      {too_many, "Heartbeat: 'devices' is 5000, outside [0, 4096]"},
      {huge, "Heartbeat: 'pid' is 18446744073709551615, outside [0, 9223372036854775807]"},
      {json::array(), "Heartbeat: the body is not an object"},
  };
  for (const Case& c : cases) {
    auto w = WorkerStatusBody::FromJson(c.body, "Heartbeat");
    CHECK(w.status().code() == Status::Code::kInvalidArgument);
    CHECK(w.status().message() == c.message);
  }
  // A trainer entry it cannot read costs that entry, never the heartbeat (the daemon's
  // liveness); TrainerExited, which is nothing but entries, is refused whole.
  for (const auto& [body, problem] :
       {std::pair{trainer_bad,
                  "Heartbeat: trainers[0]: 'running' must be true or false, not number"},
        std::pair{trainer_gone, "Heartbeat: trainers[0]: 'exit_code' is missing"}}) {
    auto w = WorkerStatusBody::FromJson(body, "Heartbeat");
    REQUIRE(w.ok());
    CHECK(w->trainers.empty());
    CHECK(w->rejected_trainers == 1);
    CHECK(w->trainer_problem == problem);
  }
  CHECK(TrainerExitedBody::FromJson({{"trainers", trainer_bad["trainers"]}}).status().message() ==
        "TrainerExited: trainers[0]: 'running' must be true or false, not number");
  CHECK(StepReportBody::FromJson({{"rank", 0}, {"step", 1}, {"compute_s", "fast"}})
            .status()
            .message() == "StepReport: 'compute_s' must be a number, not string");
  CHECK(StepReportBody::FromJson({{"rank", 0}, {"step", 1}, {"expert_load", {{"1/5", {1}}}}})
            .status()
            .message() ==
        "StepReport: 'expert_load.1/5' names a MoE layer that is not [A-Za-z0-9._-]{1,16}");
  CHECK(StepReportBody::FromJson({{"rank", 0}, {"step", 1}, {"expert_load", {{"3", {1.5}}}}})
            .status()
            .message() == "StepReport: 'expert_load.3' must hold integers only");
  CHECK(RendezvousBody::FromJson({{"rank", 0}}).status().message() ==
        "Rendezvous: 'endpoint' is missing");
  CHECK(ShardWrittenBody::FromJson({{"rank", 0}, {"step", -1}, {"shard", "s"}, {"bytes", 1}})
            .status()
            .message() == "ShardWritten: 'step' is -1, outside [0, 9223372036854775807]");
  CHECK(SubmitJobBody::FromJson({{"spec_yaml", 5}}).status().message() ==
        "SubmitJob: 'spec_yaml' must be a string, not number");
  CHECK(QueryBody::FromJson({{"what", "log"}, {"job", "j"}, {"rank", "0"}}).status().message() ==
        "Query: 'rank' must be an integer, not string");
  CHECK(QueryBody::FromJson({{"what", "metrics"}, {"limit", -3}}).status().message() ==
        "Query: 'limit' is -3, outside [0, 9223372036854775807]");
  CHECK(TrainerExitedBody::FromJson(json::object()).status().message() ==
        "TrainerExited: 'trainers' is missing");
}

TEST_CASE("StartTrainers: replica lists hold one rank of the job (or -1) per rank") {
  const json base = {{"ranks", {0, 1}}, {"spec_yaml", "y"}, {"run_dir", "/r"}, {"world", 2}};
  auto with = [&](const char* key, json list) {
    json b = base;
    b[key] = std::move(list);
    return StartTrainersBody::FromJson(b);
  };
  auto ok = with("replica_to", {1, 0});
  REQUIRE(ok.ok());
  CHECK(ok->replica_to == std::vector<int>{1, 0});
  CHECK(ok->replica_fetch.empty());
  CHECK(with("replica_fetch", {-1, 0})->replica_fetch == std::vector<int>{-1, 0});
  CHECK(with("replica_to", {1}).status().message() ==
        "StartTrainers: 'replica_to' must list one entry per rank (2)");
  CHECK(with("replica_fetch", {2, 0}).status().message() ==
        "StartTrainers: 'replica_fetch' must hold ranks of the job or -1");
  CHECK(with("replica_to", {"1", 0}).status().message() ==
        "StartTrainers: 'replica_to' must hold ranks of the job or -1");
  auto report = StepReportBody::FromJson({{"rank", 0}, {"step", 5}, {"replica_steps", {2, 4}}});
  REQUIRE(report.ok());
  CHECK(report->replica_newest == 4);
  CHECK(StepReportBody::FromJson({{"rank", 0}, {"step", 5}, {"replica_steps", {4, 2}}})
            .status()
            .message() == "StepReport: 'replica_steps' must be [oldest, newest] steps");
}

TEST_CASE("CheckpointCommitted: ascending positive steps, at most checkpoint.keep's limit") {
  auto ok = CheckpointCommittedBody::FromJson({{"steps", {30, 40}}});
  REQUIRE(ok.ok());
  CHECK(ok->steps == std::vector<int64_t>{30, 40});
  // A writer deletes by this list: one it cannot trust is refused whole, by name.
  CHECK(CheckpointCommittedBody::FromJson(json::object()).status().message() ==
        "CheckpointCommitted: 'steps' is missing");
  for (const json& bad : {json{40, 30}, json{30, 30}, json{0, 10}, json{"10"}, json{-5}}) {
    CAPTURE(bad.dump());
    CHECK(CheckpointCommittedBody::FromJson({{"steps", bad}}).status().message() ==
          "CheckpointCommitted: 'steps' must be ascending positive steps, got " + bad.dump());
  }
  json many = json::array();
  for (int64_t s = 1; s <= kMaxCheckpointKeep + 1; ++s) many.push_back(s);
  CHECK(CheckpointCommittedBody::FromJson({{"steps", many}}).status().message() ==
        "CheckpointCommitted: 'steps' lists 1001 steps, more than 1000");
}

TEST_CASE("bodies: a pre-flight report and a stop, bounded, refusals named") {
  auto p = PreflightReportBody::FromJson(
      {{"rank", 3},
       {"gemm_gflops", 12.5},
       {"pairs",
        json::array({{{"partner", 2}, {"gbps", 0.4}, {"error", ""}},
                     {{"partner", 0}, {"gbps", 0.0}, {"error", std::string(900, 'e')}}})}});
  REQUIRE(p.ok());
  CHECK(p->rank == 3);
  CHECK(p->gemm_gflops == 12.5);
  REQUIRE(p->pairs.size() == 2);
  CHECK(p->pairs[0].partner == 2);
  CHECK(p->pairs[1].error.size() == kMaxPreflightErrorChars);
  json three = json::array();
  for (int i = 0; i < 3; ++i) three.push_back({{"partner", i}, {"gbps", 1.0}});
  auto many = PreflightReportBody::FromJson({{"rank", 0}, {"pairs", three}});
  CHECK(many.status().message().find("pairs") != std::string::npos);
  auto bad =
      PreflightReportBody::FromJson({{"rank", 0}, {"pairs", json::array({{{"partner", "two"}}})}});
  CHECK(!bad.ok());
  CHECK(bad.status().message().find("PreflightReport") != std::string::npos);

  CHECK(StopJobBody::FromJson(json::object())->reason.empty());
  CHECK(StopJobBody::FromJson({{"reason", "preempted"}})->reason == "preempted");
  auto long_reason = StopJobBody::FromJson({{"reason", std::string(300, 'x')}});
  CHECK(long_reason.status().message().find("at most 256") != std::string::npos);
  CHECK(!StopJobBody::FromJson({{"reason", 5}}).ok());
}

}  // namespace
}  // namespace moerun
