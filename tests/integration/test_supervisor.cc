// The daemon's trainer supervision with real child processes: exit codes and signals are
// reported, a trainer that ignores SIGTERM is killed after the grace period, fencing stops
// only the old generation, and a frozen (SIGSTOPped) trainer is killed after the frozen
// timeout while one that runs again in time is left alone.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "worker/daemon/trainer_supervisor.h"

using moerun::worker::TrainerExit;
using moerun::worker::TrainerLaunch;
using moerun::worker::TrainerSupervisor;
using Clock = std::chrono::steady_clock;

namespace {

TrainerLaunch Shell(const std::string& job, uint64_t gen, int rank, const std::string& script) {
  return {job, gen, rank, {"/bin/sh", "-c", script}, ""};
}

void PollUntil(TrainerSupervisor& s, const std::function<bool()>& done) {
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!done() && Clock::now() < end) {
    s.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

TEST_CASE("exit codes and signals are reported with the rank") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "exit 3")).ok());
  REQUIRE(s.Start(Shell("j", 1, 1, "kill -9 $$")).ok());
  REQUIRE(s.Start(Shell("j", 1, 2, "exit 0")).ok());
  PollUntil(s, [&] { return exits.size() == 3; });
  REQUIRE(exits.size() == 3);
  for (const auto& e : exits) {
    if (e.rank == 0) CHECK(e.Describe() == "exited with code 3");
    if (e.rank == 1) CHECK(e.Describe() == "killed by signal 9 (Killed)");
    if (e.rank == 2) CHECK(e.exit_code == 0);
  }
  CHECK(s.Running() == 0);
}

TEST_CASE("a trainer that ignores SIGTERM is killed after the grace period") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "trap '' TERM; while true; do sleep 0.05; done")).ok());
  REQUIRE(s.Start(Shell("j", 1, 1, "sleep 100")).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the trap install
  const auto t0 = Clock::now();
  s.StopJob("j", 300);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  CHECK(s.Running() == 0);
  CHECK(secs >= 0.3);
  CHECK(secs < 3.0);
  REQUIRE(exits.size() == 2);
  for (const auto& e : exits) CHECK(e.signal == (e.rank == 0 ? SIGKILL : SIGTERM));
}

TEST_CASE("fencing stops the old generation only") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  REQUIRE(s.Start(Shell("j", 1, 0, "sleep 100")).ok());
  REQUIRE(s.Start(Shell("j", 2, 0, "sleep 100")).ok());
  REQUIRE(s.Start(Shell("k", 1, 0, "sleep 100")).ok());
  s.StopOlderThan("j", 2, 1000);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].job_id == "j");
  CHECK(exits[0].generation == 1);
  CHECK(s.Running() == 2);
}

TEST_CASE("a trainer frozen past the frozen timeout is killed, and its exit says why") {
  std::vector<TrainerExit> exits;
  TrainerSupervisor s([&](const TrainerExit& e) { exits.push_back(e); });
  s.set_frozen_timeout_ms(300);
  auto frozen = s.Start(Shell("j", 1, 0, "sleep 100"));
  auto thawed = s.Start(Shell("j", 1, 1, "sleep 100"));
  REQUIRE(frozen.ok());
  REQUIRE(thawed.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(frozen.value(), SIGSTOP);
  kill(thawed.value(), SIGSTOP);
  const auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) {  // 100 ms of polls: frozen, but not for long enough yet
    s.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(thawed.value(), SIGCONT);
  CHECK(exits.empty());
  PollUntil(s, [&] { return !exits.empty(); });
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].rank == 0);
  CHECK(exits[0].signal == SIGKILL);
  CHECK(exits[0].Describe().find("frozen (stopped, state T) for ") == 0);
  CHECK(exits[0].Describe().find("killed by its daemon") != std::string::npos);
  CHECK(secs >= 0.3);
  CHECK(s.Running() == 1);  // the one that ran again in time
}
