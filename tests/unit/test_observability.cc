// What researchers read: the data-plane wait a TimedCommunicator measures, the Prometheus text
// the coordinator exposes, and the terminal view of `moerun status`.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/clock.h"
#include "coordinator/cli/status_format.h"
#include "coordinator/http/http_api.h"
#include "worker/comm/timed_communicator.h"

using moerun::Result;
using moerun::Status;
using moerun::comm::Communicator;
using moerun::comm::DataPlaneWait;
using moerun::comm::TimedCommunicator;
using nlohmann::json;

namespace {

// Every call takes `ms` milliseconds of `clock`, stepped by hand; Split hands out another
// such communicator.
class SlowCommunicator : public Communicator {
 public:
  SlowCommunicator(int ms, moerun::FakeClock* clock) : ms_(ms), clock_(clock) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  Status Send(int, uint32_t, const void*, size_t) override { return Wait(); }
  Status Recv(int, uint32_t, void*, size_t) override { return Wait(); }
  Status AllReduceSum(float*, size_t) override { return Wait(); }
  Status AllReduceSum(double*, size_t) override { return Wait(); }
  Status AllToAllV(const void*, const std::vector<size_t>&, void*,
                   const std::vector<size_t>&) override {
    return Wait();
  }
  Status Broadcast(int, void*, size_t) override { return Wait(); }
  Status Barrier() override { return Wait(); }
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>&,
                                              const std::string&) override {
    return std::unique_ptr<Communicator>(std::make_unique<SlowCommunicator>(ms_, clock_));
  }
  void Abort(const std::string&) override {}

 private:
  Status Wait() {
    clock_->AdvanceMs(ms_);
    return Status::OK();
  }
  int ms_;
  moerun::FakeClock* clock_;
};

}  // namespace

TEST_CASE("a timed communicator puts point-to-point calls in the bubble, collectives in the wait") {
  auto wait = std::make_shared<DataPlaneWait>();
  moerun::FakeClock clock;
  TimedCommunicator world(std::make_unique<SlowCommunicator>(20, &clock), wait, &clock);
  auto group = world.Split({0, 1}, "g");
  REQUIRE(group.ok());
  float f = 0;
  double d = 0;
  REQUIRE(world.Recv(1, 0, &f, 4).ok());
  REQUIRE(world.Send(1, 0, &f, 4).ok());
  REQUIRE(world.SendRecv(1, 0, &f, 4, 1, 0, &f, 4).ok());  // Send then Recv: 40 ms
  REQUIRE(group.value()->AllReduceSum(&d, 1).ok());        // a split group adds to the same wait
  REQUIRE(group.value()->AllToAllV(&f, {0, 4}, &f, {0, 4}).ok());
  REQUIRE(world.Barrier().ok());
  // Exactly the fake clock's time: Recv, Send and SendRecv 80 ms; three collectives 60 ms.
  CHECK(wait->pipeline_s == doctest::Approx(0.080));
  CHECK(wait->collective_s == doctest::Approx(0.060));
  // A step's share: what came after a copy taken at its start, each kind apart.
  const DataPlaneWait start = *wait;
  REQUIRE(world.Recv(1, 0, &f, 4).ok());
  const DataPlaneWait step = wait->Since(start);
  CHECK(step.pipeline_s == doctest::Approx(0.020));
  CHECK(step.collective_s == 0.0);
  CHECK(world.size() == 2);
}

TEST_CASE("Prometheus text: families grouped, labels escaped, a rank's step split by phase") {
  const json status = {
      {"jobs",
       {{{"job_id", "j-1"}, {"phase", "RUNNING"}, {"step", 12}, {"loss", 2.5}, {"restarts", 1}}}},
      {"workers",
       {{{"worker", "w0"},
         {"host", "h\"0"},
         {"alive", true},
         {"heartbeat_age_ms", 250},
         {"devices", 2},
         {"used", 2},
         {"trainers", 2},
         {"trainer_failures", 1}},
        {{"worker", "w1"},
         {"host", "h1"},
         {"alive", false},
         {"heartbeat_age_ms", -1},
         {"devices", 2},
         {"used", 0},
         {"trainers", 0},
         {"trainer_failures", 0}}}},
      {"counters", {{"received", 10}}}};
  const std::map<std::string, json> last = {
      {"j-1",
       {{"step", 12},
        {"lr", 0.001},
        {"expert_load", {{"1", {3, 5}}}},
        {"ranks",
         {{{"rank", 0}, {"compute_s", 0.5}, {"data_wait_s", 0.25}, {"bubble_s", 0.125}}}}}}};
  const std::string text = moerun::coordinator::HttpApi::PrometheusText(status, last);
  CHECK(text.find("moerun_job_loss{job=\"j-1\"} 2.5\n") != std::string::npos);
  CHECK(text.find("moerun_train_learning_rate{job=\"j-1\"} 0.001\n") != std::string::npos);
  CHECK(text.find("moerun_rank_step_phase_seconds{job=\"j-1\",rank=\"0\",phase=\"bubble\"} "
                  "0.125\n") != std::string::npos);
  CHECK(text.find("moerun_expert_load{job=\"j-1\",layer=\"1\",expert=\"1\"} 5\n") !=
        std::string::npos);
  CHECK(text.find("moerun_worker_up{worker=\"w0\",host=\"h\\\"0\"} 1\n") != std::string::npos);
  CHECK(text.find("moerun_worker_trainer_failures_total{worker=\"w0\",host=\"h\\\"0\"} 1\n") !=
        std::string::npos);
  // A dead worker has no heartbeat age sample.
  CHECK(text.find("moerun_worker_heartbeat_age_seconds{worker=\"w1\"") == std::string::npos);
  // Each family's samples follow its TYPE line without another family in between.
  std::istringstream in(text);
  std::string line, family;
  std::set<std::string> done;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      if (!family.empty()) done.insert(family);
      family = line.substr(7, line.find(' ', 7) - 7);
      CHECK(done.count(family) == 0);
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    CHECK_MESSAGE(name == family, line);
  }
}

TEST_CASE("moerun status shows progress bars and highlights unhealthy workers on a terminal") {
  using moerun::cli::FormatStatus;
  using moerun::cli::ProgressBar;
  CHECK(ProgressBar(150, 300, 20) == "[##########----------]  50%");
  CHECK(ProgressBar(0, 0, 4) == "[----]   0%");
  CHECK(ProgressBar(400, 300, 4) == "[####] 100%");
  const json status = {{"jobs",
                        {{{"job_id", "j-1"},
                          {"phase", "RUNNING"},
                          {"step", 75},
                          {"total_steps", 300},
                          {"loss", 2.5},
                          {"tokens_per_s", 1000.0},
                          {"eta_s", 30.0},
                          {"submitted_ms", 0}}}},
                       {"workers",
                        {{{"worker", "good"},
                          {"host", "h0"},
                          {"alive", true},
                          {"health", "ok"},
                          {"heartbeat_age_ms", 100},
                          {"devices", 2},
                          {"used", 2}},
                         {{"worker", "slow"},
                          {"host", "h1"},
                          {"alive", true},
                          {"health", "late"},
                          {"heartbeat_age_ms", 2500},
                          {"devices", 2},
                          {"used", 2}},
                         {{"worker", "gone"},
                          {"host", "h2"},
                          {"alive", false},
                          {"health", "dead"},
                          {"heartbeat_age_ms", -1},
                          {"devices", 2},
                          {"used", 0}}}}};
  const std::string plain = FormatStatus(status, 1000, false);
  CHECK(plain.find("[#####---------------]  25%") != std::string::npos);
  CHECK(plain.find("LATE") != std::string::npos);
  CHECK(plain.find("DEAD") != std::string::npos);
  CHECK(plain.find("2 unhealthy worker(s)") != std::string::npos);
  CHECK(plain.find('\033') == std::string::npos);
  const std::string color = FormatStatus(status, 1000, true);
  // The late row yellow, the dead row red, the healthy one plain.
  const size_t slow = color.find("slow"), gone = color.find("gone"), good = color.find("good");
  CHECK(color.rfind("\033[1;33m", slow) > color.rfind('\n', slow));
  CHECK(color.rfind("\033[1;31m", gone) > color.rfind('\n', gone));
  CHECK(color.substr(color.rfind('\n', good) + 1, 4) == "good");
}
