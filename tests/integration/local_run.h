// What the chaos suites do with a `moerun local` run: ask its coordinator (`moerun status`),
// find its trainers, wait for it to end, read the job's record and compare its weights with
// an undisturbed run's.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "coordinator/state/coordinator_store.h"
#include "tests/integration/process.h"

namespace moerun::testing {

// `moerun <args>` against the coordinator of the `moerun local` run in `run` (its endpoint and
// keys from the run's control dir), stderr included.
inline std::string LocalCli(const std::string& run, const std::string& args) {
  const std::string control = run + "/control";
  const std::string endpoint = ReadAll(control + "/coordinator/endpoint");
  return ShellOutput("MOERUN_COORDINATOR=" + endpoint.substr(0, endpoint.find('\n')) +
                     " MOERUN_KEYS=" + control + "/keys " + MOERUN_BIN + " " + args + " 2>&1");
}

// The trainer process of `rank` among the daemons of `moerun local` (pid `local`); 0 if none.
inline pid_t LocalTrainer(pid_t local, int rank) {
  for (pid_t d : ChildrenRunning(local, "moerun-worker")) {
    for (pid_t t : TrainersOf(d))
      if (HasFlag(t, "--rank", std::to_string(rank))) return t;
  }
  return 0;
}

// Waits up to `seconds` for `moerun local` (pid `local`) to end; returns its exit code
// (-1: killed by a signal).
inline int WaitLocalExit(pid_t local, double seconds) {
  int status = 0;
  REQUIRE(WaitFor([&] { return waitpid(local, &status, WNOHANG) == local; }, seconds));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The only job in the coordinator store of the ended `moerun local` run in `run`; its events
// are logged as test messages.
inline coordinator::JobState FinalJob(const std::string& run) {
  auto store = coordinator::CoordinatorStore::Open(run + "/control/coordinator/db");
  REQUIRE(store.ok());
  auto jobs = store.value()->LoadJobs();
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 1);
  for (const auto& e : jobs->front().events())
    MESSAGE(coordinator::ToString(e.to) << ": " << e.cause);
  return jobs->front();
}

// configs/tiny-cpu.yaml with one line's `from` replaced by `to`, written as dir/tiny-cpu.yaml;
// returns its path.
inline std::string DefaultJobWith(const std::string& dir, const std::string& from,
                                  const std::string& to) {
  std::string yaml = ReadAll(std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml");
  REQUIRE(yaml.find(from) != std::string::npos);
  yaml.replace(yaml.find(from), from.size(), to);
  const std::string spec = dir + "/tiny-cpu.yaml";
  std::ofstream(spec) << yaml;
  return spec;
}

// The job of `spec` trained undisturbed (`moerun launch`, 4 processes) into dir/clean with
// `extra` flags must end with the same weights as `run`, at `step`.
inline void CheckDigestOfUndisturbed(const std::string& spec, const std::string& run,
                                     const std::string& dir, const std::string& extra,
                                     const std::string& step) {
  Output clean = RunMoerun("launch --nproc 4 " + spec + " --run-dir " + dir + "/clean " + extra +
                           " --no-progress");
  REQUIRE_MESSAGE(clean.exit_code == 0, clean.err);
  Output a = RunMoerun("checkpoint digest --run-dir " + run);
  Output b = RunMoerun("checkpoint digest --run-dir " + dir + "/clean");
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out.find("step " + step) != std::string::npos);
}

}  // namespace moerun::testing
