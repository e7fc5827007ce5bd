// DaemonCore (worker/daemon/daemon_core.h): a worker daemon's decisions, driven by envelopes
// and a FakeClock stepped by hand — registration, heartbeats, exits repeated until
// acknowledged, fencing of older generations, the lease and its self-fence, a coordinator
// that goes away and comes back, and bodies it cannot read. No sockets, no processes, no root.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/timeouts.h"
#include "worker/daemon/daemon_core.h"

namespace moerun::worker {
namespace {

using nlohmann::json;

struct Fixture {
  FakeClock clock{1'000'000};
  DaemonCore core{{"w1", "host-1", "cpu", "127.0.0.1", 2, 4242}, &clock};

  DaemonActions Feed(MessageType type, json body, const std::string& job = "",
                     uint64_t generation = 0) {
    return core.OnEnvelope({type, generation, job, "coordinator", std::move(body)});
  }
  // Registered with a 100 ms interval and a 1000 ms lease.
  void Register() {
    (void)core.Tick();
    (void)Feed(MessageType::kRegistered,
               {{"heartbeat_interval_ms", 100}, {"heartbeat_timeout_ms", 1000}});
  }
  DaemonActions Start(const std::string& job, uint64_t gen, std::vector<int> ranks) {
    return Feed(MessageType::kStartTrainers,
                {{"ranks", ranks}, {"spec_yaml", "job: {}\n"}, {"run_dir", "/r"}, {"world", 2}},
                job, gen);
  }
  // Runs the starts as the daemon would: each gets a pid.
  void Started(const DaemonActions& a, int64_t first_pid) {
    for (const auto& s : a.starts) core.OnStarted(s.job_id, s.generation, s.rank, first_pid++);
  }
  DaemonActions End(const std::string& job, uint64_t gen, int rank, int code) {
    return core.OnTrainerEnd(
        {job, gen, rank, 77, code, 0, "exited with code " + std::to_string(code)});
  }
};

int CountType(const DaemonActions& a, MessageType t) {
  int n = 0;
  for (const auto& e : a.sends) n += e.type == t;
  return n;
}

// The first envelope of type `t` in `a`, valid while `a` lives.
const Envelope* FindType(const DaemonActions& a, MessageType t) {
  for (const auto& e : a.sends)
    if (e.type == t) return &e;
  return nullptr;
}

TEST_CASE("daemon core: Register until Registered, then a Heartbeat every interval") {
  Fixture f;
  auto first = f.core.Tick();
  const Envelope* reg = FindType(first, MessageType::kRegister);
  REQUIRE(reg != nullptr);
  CHECK(reg->sender == "worker:w1");
  CHECK(reg->body["host"] == "host-1");
  CHECK(reg->body["devices"] == 2);
  CHECK(reg->body["pid"] == 4242);
  CHECK(CountType(f.core.Tick(), MessageType::kRegister) == 0);  // not before the interval
  f.clock.AdvanceMs(1000);  // the default interval before Registered
  CHECK(CountType(f.core.Tick(), MessageType::kRegister) == 1);
  (void)f.Feed(MessageType::kRegistered,
               {{"heartbeat_interval_ms", 100}, {"heartbeat_timeout_ms", 1000}});
  CHECK(f.core.registered());
  CHECK(f.core.heartbeat_interval_ms() == 100);
  f.clock.AdvanceMs(1000);
  auto beat = f.core.Tick();
  CHECK(CountType(beat, MessageType::kHeartbeat) == 1);
  CHECK(CountType(beat, MessageType::kRegister) == 0);
  f.clock.AdvanceMs(50);
  CHECK(CountType(f.core.Tick(), MessageType::kHeartbeat) == 0);
  f.clock.AdvanceMs(50);
  CHECK(CountType(f.core.Tick(), MessageType::kHeartbeat) == 1);
}

TEST_CASE("daemon core: heartbeats name the jobs whose memory snapshots the host holds") {
  Fixture f;
  f.Register();
  f.core.set_memory_jobs({"old-1", "tiny-2"});
  f.clock.AdvanceMs(100);
  auto beat = f.core.Tick();
  const Envelope* hb = FindType(beat, MessageType::kHeartbeat);
  REQUIRE(hb != nullptr);
  CHECK(hb->body["memory_jobs"] == json::array({"old-1", "tiny-2"}));
  // The stop the coordinator answers with ends the job here: the daemon removes its files.
  auto stop = f.Feed(MessageType::kStopTrainers,
                     {{"below_generation", UINT64_MAX}, {"grace_ms", 0}}, "old-1");
  REQUIRE(stop.stops.size() == 1);
  CHECK(stop.stops[0].job_over);
  CHECK(stop.stops[0].job_id == "old-1");
}

TEST_CASE("daemon core: an exit is reported at once and in every heartbeat until acknowledged") {
  Fixture f;
  f.Register();
  auto started = f.Start("j-1", 1, {0, 1});
  REQUIRE(started.starts.size() == 2);
  CHECK(started.starts[0].device == 0);  // distinct slots, lowest first
  CHECK(started.starts[1].device == 1);
  CHECK(started.starts[0].how.run_dir == "/r");
  f.Started(started, 100);
  CHECK(f.core.running() == 2);
  (void)f.End("j-1", 1, 0, 3);
  auto now = f.core.Tick();
  const Envelope* exited = FindType(now, MessageType::kTrainerExited);
  REQUIRE(exited != nullptr);
  REQUIRE(exited->body["trainers"].size() == 1);
  CHECK(exited->body["trainers"][0]["exit_code"] == 3);
  CHECK(CountType(f.core.Tick(), MessageType::kTrainerExited) == 0);  // once at once
  for (int i = 0; i < 3; ++i) {                                       // ... then in every heartbeat
    f.clock.AdvanceMs(100);
    (void)f.Feed(MessageType::kReply, {{"acked", json::array()}});
    const DaemonActions tick1 = f.core.Tick();
    const Envelope* beat = FindType(tick1, MessageType::kHeartbeat);
    REQUIRE(beat != nullptr);
    int reported = 0;
    for (const auto& t : beat->body["trainers"]) reported += t["running"] == false;
    CHECK(reported == 1);
  }
  (void)f.Feed(MessageType::kReply,
               {{"acked", json::array({{{"job", "j-1"}, {"generation", 1}, {"rank", 0}}})}});
  CHECK(f.core.unacknowledged() == 0);
  f.clock.AdvanceMs(100);
  const DaemonActions tick2 = f.core.Tick();
  const Envelope* beat = FindType(tick2, MessageType::kHeartbeat);
  REQUIRE(beat != nullptr);
  REQUIRE(beat->body["trainers"].size() == 1);  // only the running rank 1
  CHECK(beat->body["trainers"][0]["running"] == true);
  // A repeated start of the same generation starts nothing twice.
  CHECK(f.Start("j-1", 1, {0, 1}).starts.empty());
}

TEST_CASE("daemon core: a newer generation fences the older one and starts after it is gone") {
  Fixture f;
  f.Register();
  f.Started(f.Start("j-1", 1, {0, 1}), 100);
  auto second = f.Start("j-1", 2, {0, 1});
  REQUIRE(second.stops.size() == 1);
  CHECK(second.stops[0].job_id == "j-1");
  CHECK(second.stops[0].below_generation == 2);
  CHECK(second.stops[0].grace_ms == kFenceGraceMs);
  CHECK(second.starts.empty());  // generation 1 still runs here
  (void)f.End("j-1", 1, 0, -1);
  CHECK(f.core.Tick().starts.empty());  // rank 1 of generation 1 still stopping
  (void)f.End("j-1", 1, 1, -1);
  auto now = f.core.Tick();
  REQUIRE(now.starts.size() == 2);
  CHECK(now.starts[0].generation == 2);
  // StopTrainers: the stop and its grace, capped at the daemon's own.
  auto stop =
      f.Feed(MessageType::kStopTrainers, {{"below_generation", 3}, {"grace_ms", 99999}}, "j-1");
  REQUIRE(stop.stops.size() == 1);
  CHECK(stop.stops[0].below_generation == 3);
  CHECK(stop.stops[0].grace_ms == kTrainerStopGraceMs);
}

TEST_CASE("daemon core: the lease runs out, every trainer stops once; an answer renews it") {
  Fixture f;
  f.Register();
  f.Started(f.Start("j-1", 1, {0, 1}), 100);
  f.clock.AdvanceMs(301);  // over three intervals without a word: away, trainers keep running
  auto away = f.core.Tick();
  CHECK(f.core.coordinator_away());
  CHECK(away.stops.empty());
  CHECK_FALSE(away.warnings.empty());
  f.clock.AdvanceMs(700);  // past the 1000 ms lease
  auto fenced = f.core.Tick();
  REQUIRE(fenced.stops.size() == 1);
  CHECK(fenced.stops[0].below_generation == UINT64_MAX);
  CHECK(fenced.stops[0].grace_ms == kFenceGraceMs);
  CHECK(f.core.self_fenced());
  CHECK(f.core.Tick().stops.empty());  // once
  f.clock.AdvanceMs(100);              // heartbeats go on while the coordinator is away
  CHECK(CountType(f.core.Tick(), MessageType::kHeartbeat) == 1);
  // The coordinator answers again: no longer away, the lease renewed.
  auto back = f.Feed(MessageType::kReply, {{"acked", json::array()}});
  CHECK_FALSE(f.core.coordinator_away());
  CHECK(back.notes.size() == 1);
  (void)f.core.Tick();
  CHECK_FALSE(f.core.self_fenced());
}

TEST_CASE("daemon core: the stop says why: an expired lease, a newer generation") {
  Fixture f;
  f.Register();
  f.Started(f.Start("j-1", 1, {0}), 100);
  auto fence = f.Start("j-1", 2, {0});
  REQUIRE(fence.stops.size() == 1);
  CHECK(fence.stops[0].cause == "stopped by its daemon: generation 2 of the job starts here");
  f.clock.AdvanceMs(1001);
  auto fenced = f.core.Tick();
  REQUIRE(fenced.stops.size() == 1);
  CHECK(fenced.stops[0].cause.find("the lease (heartbeat timeout 1000 ms) expired") !=
        std::string::npos);
}

TEST_CASE("daemon core: while the coordinator's address refuses connections the lease waits") {
  Fixture f;
  f.Register();
  f.Started(f.Start("j-1", 1, {0, 1}), 100);
  // The coordinator dies at once; its address refuses every attempt for 1500 ms.
  for (int i = 0; i < 15; ++i) {
    f.clock.AdvanceMs(100);
    (void)f.core.OnLink({LinkEvent::Kind::kRefused});
    CHECK(f.core.Tick().stops.empty());
  }
  CHECK(f.core.coordinator_away());
  // Restarted: the connection comes up and a heartbeat goes at once, not an interval later.
  f.clock.AdvanceMs(50);
  (void)f.core.Tick();
  f.clock.AdvanceMs(10);
  (void)f.core.OnLink({LinkEvent::Kind::kUp});
  CHECK(CountType(f.core.Tick(), MessageType::kHeartbeat) == 1);
  (void)f.Feed(MessageType::kReply, {{"acked", json::array()}});
  CHECK_FALSE(f.core.coordinator_away());
  CHECK_FALSE(f.core.self_fenced());

  // Refusals stretch the lease by one more timeout at most: a network that answers with
  // resets while the coordinator lives cannot keep trainers beside their replacements.
  for (int i = 0; i < 25; ++i) {
    f.clock.AdvanceMs(100);
    (void)f.core.OnLink({LinkEvent::Kind::kRefused});
    const auto tick = f.core.Tick();
    CHECK(tick.stops.empty() == (i != 20));  // fenced once, 2000 ms after the answer
  }
  CHECK(f.core.self_fenced());
}

TEST_CASE("daemon core: a refused key is said once per run of refusals") {
  Fixture f;
  CHECK(f.core.OnLink({LinkEvent::Kind::kAuthFailed, 400}).warnings.size() == 1);
  CHECK(f.core.OnLink({LinkEvent::Kind::kAuthFailed, 400}).warnings.empty());
  (void)f.core.OnLink({LinkEvent::Kind::kUp});
  const auto again = f.core.OnLink({LinkEvent::Kind::kAuthFailed, 400});
  REQUIRE(again.warnings.size() == 1);
  CHECK(again.warnings[0].find("authorized_keys") != std::string::npos);
}

TEST_CASE("daemon core: past the lease nothing new starts, and heartbeats show only real pids") {
  Fixture f;
  f.Register();
  f.Started(f.Start("j-1", 1, {0}), 100);
  (void)f.Start("j-1", 2, {0});  // waits for generation 1 to stop
  f.clock.AdvanceMs(1001);       // the lease runs out ...
  (void)f.End("j-1", 1, 0, -1);  // ... as generation 1 goes
  auto fenced = f.core.Tick();
  CHECK(fenced.starts.empty());  // the coordinator counts this daemon dead: no new trainer
  // It answers again: the pending start goes ahead, and until the daemon has carried it out
  // (a pid), no heartbeat reports it.
  (void)f.Feed(MessageType::kReply, {{"acked", json::array()}});
  f.clock.AdvanceMs(1000);
  const DaemonActions tick = f.core.Tick();
  REQUIRE(tick.starts.size() == 1);
  const Envelope* beat = FindType(tick, MessageType::kHeartbeat);
  REQUIRE(beat != nullptr);
  for (const auto& t : beat->body["trainers"]) CHECK(t["pid"] != 0);
  f.Started(tick, 200);
  f.clock.AdvanceMs(100);
  const DaemonActions next = f.core.Tick();
  const Envelope* later = FindType(next, MessageType::kHeartbeat);
  REQUIRE(later != nullptr);
  bool seen = false;
  for (const auto& t : later->body["trainers"])
    seen = seen || (t["generation"] == 2 && t["pid"] == 200);
  CHECK(seen);
}

TEST_CASE("daemon core: no lease before Registered, and none without trainers") {
  Fixture f;
  (void)f.core.Tick();
  f.clock.AdvanceMs(60'000);
  CHECK(f.core.Tick().stops.empty());  // never registered: nothing of its runs anywhere
  (void)f.Feed(MessageType::kRegistered,
               {{"heartbeat_interval_ms", 100}, {"heartbeat_timeout_ms", 1000}});
  f.clock.AdvanceMs(5000);
  CHECK(f.core.Tick().stops.empty());  // silent past the lease, but nothing to stop
  CHECK_FALSE(f.core.self_fenced());
}

TEST_CASE("daemon core: bodies it cannot read are dropped by name and change nothing") {
  Fixture f;
  f.Register();
  auto bad_start = f.Feed(MessageType::kStartTrainers, {{"ranks", {0, "one"}}}, "j-1", 1);
  CHECK(bad_start.starts.empty());
  CHECK(bad_start.stops.empty());  // not even the fence of a start it cannot run
  REQUIRE(bad_start.warnings.size() == 1);
  CHECK(bad_start.warnings[0] ==
        "dropped a message: StartTrainers: 'ranks[1]' must be a rank (a non-negative integer)");
  auto bad_stop = f.Feed(MessageType::kStopTrainers, {{"below_generation", -2}}, "j-1");
  CHECK(bad_stop.stops.empty());
  CHECK(bad_stop.warnings[0].find("'below_generation'") != std::string::npos);
  auto bad_ack = f.Feed(MessageType::kReply, {{"acked", json::array({{{"job", 5}}})}});
  CHECK(bad_ack.warnings[0] ==
        "dropped a message: Reply: acked[0]: 'job' must be a string, not "
        "number");
  auto bad_job = f.Start("../etc", 1, {0});
  CHECK(bad_job.starts.empty());
  CHECK(bad_job.warnings[0].find("ignored a start") != std::string::npos);
  auto log = f.Feed(MessageType::kQuery, {{"request_id", "log-1"}, {"rank", 0}}, "../x");
  REQUIRE(log.sends.size() == 1);
  CHECK(log.sends[0].type == MessageType::kError);
  CHECK(log.logs.empty());
  auto fine = f.Feed(MessageType::kQuery, {{"request_id", "log-2"}, {"rank", 1}}, "j-1");
  REQUIRE(fine.logs.size() == 1);
  CHECK(fine.logs[0].request.rank == 1);
  CHECK(fine.logs[0].request.max_bytes == -1);
  CHECK(f.core.running() == 0);
}

}  // namespace
}  // namespace moerun::worker
