#include "bench/recovery_bench.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "bench/bench_process.h"
#include "common/clock.h"
#include "coordinator/state/coordinator_store.h"
#include "worker/trainer/trainer.h"

namespace moerun::bench {
namespace {

namespace fs = std::filesystem;
using coordinator::JobPhase;

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One trial; returns its figures or an "error".
nlohmann::json Trial(const RecoveryBenchArgs& a, const std::string& fault, int trial) {
  const std::string run = "/tmp/moerun-bench-recovery-" + std::to_string(getpid()) + "-" + fault +
                          std::to_string(trial);
  fs::remove_all(run);
  fs::create_directories(run);
  nlohmann::json r = {{"bench", "recovery"}, {"fault", fault}, {"trial", trial}};
  const bool host = fault.rfind("host", 0) == 0;
  std::string spec = a.job;
  if (host) {  // a spare for the lost host's ranks; copies in memory or not
    spec = run + "-job.yaml";
    std::map<std::string, std::string> set = {{"spares", "1"}};
    if (fault == "host-disk") set["memory_replica_interval_steps"] = "0";
    if (!WriteJobWith(a.job, set, spec)) {
      r["error"] = a.job + " has no fault_tolerance.spares or memory_replica_interval_steps line";
      return r;
    }
  }
  const pid_t local = SpawnLocal(spec, run, a.steps);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  pid_t victim = -1;
  std::vector<pid_t> host_trainers;
  while (std::chrono::steady_clock::now() < deadline && victim < 0) {
    if (trainer::LastMetricsStep(run) >= a.at_step) {
      for (pid_t w : ChildrenRunning(local, "moerun-worker")) {
        const std::vector<pid_t> trainers = TrainersOf(w);
        if (host && !trainers.empty()) {
          victim = w;
          host_trainers = trainers;
        }
        for (pid_t t : trainers)
          if (!host) victim = t;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (victim < 0) {
    kill(local, SIGTERM);
    waitpid(local, nullptr, 0);
    r["error"] = "the run never reached step " + std::to_string(a.at_step);
    return r;
  }
  const int64_t fault_ms = WallClock().NowMs();
  // A lost host: its trainers gone (their shard locks with them), its daemon silent.
  for (pid_t t : host_trainers) kill(t, SIGKILL);
  kill(victim, fault == "kill" ? SIGKILL : SIGSTOP);
  int status = 0;
  waitpid(local, &status, 0);
  auto store = coordinator::CoordinatorStore::Open(run + "/control/coordinator/db");
  if (!store.ok()) {
    r["error"] = store.status().message();
    return r;
  }
  auto jobs = store.value()->LoadJobs();
  if (!jobs.ok() || jobs->empty()) {
    r["error"] = "no job in the coordinator's store";
    return r;
  }
  const auto& job = jobs->back();
  int64_t recovering_ms = -1, running_ms = -1, redone = -1;
  bool from_memory = false;
  // Until the restart runs: "(1 steps to redo, from memory step 60)", then maybe "(10 more
  // steps to redo)" when the step restored is older than that; "restoring step 60 from memory".
  const std::regex to_redo("(\\d+) (more )?steps to redo");
  for (const auto& e : job.events()) {
    if (e.time_ms < fault_ms || running_ms >= 0) continue;
    for (auto m = std::sregex_iterator(e.cause.begin(), e.cause.end(), to_redo);
         m != std::sregex_iterator(); ++m)
      redone = std::max<int64_t>(redone, 0) + std::stoll((*m)[1].str());
    from_memory = from_memory || e.cause.rfind("restoring step ", 0) == 0;
    if (e.to == JobPhase::kRecovering && recovering_ms < 0) recovering_ms = e.time_ms;
    if (e.to == JobPhase::kRunning && recovering_ms >= 0 && running_ms < 0) running_ms = e.time_ms;
  }
  int64_t next_step_ms = -1, next_after_running_ms = -1;
  auto metrics = store.value()->Metrics(job.job_id(), 0, 1000000);
  if (metrics.ok()) {
    for (const auto& m : metrics.value()) {
      const int64_t t = m.value("time_ms", int64_t(0));
      if (t > fault_ms && (next_step_ms < 0 || t < next_step_ms)) next_step_ms = t;
      if (running_ms > 0 && t > running_ms &&
          (next_after_running_ms < 0 || t < next_after_running_ms))
        next_after_running_ms = t;
    }
  }
  r["succeeded"] = job.phase() == JobPhase::kSucceeded;
  r["detect_ms"] = recovering_ms >= 0 ? recovering_ms - fault_ms : -1;
  r["rendezvous_ms"] = running_ms >= 0 ? running_ms - recovering_ms : -1;
  r["restore_to_step_ms"] = next_after_running_ms >= 0 ? next_after_running_ms - running_ms : -1;
  r["fault_to_step_ms"] = next_step_ms >= 0 ? next_step_ms - fault_ms : -1;
  r["steps_redone"] = redone;
  r["restored_from"] = from_memory ? "memory" : "disk";
  r["run_dir"] = run;
  return r;
}

}  // namespace

int RunRecoveryBench(const RecoveryBenchArgs& a) {
  for (const auto& fault : a.faults) {
    if (fault != "kill" && fault != "stop" && fault != "host" && fault != "host-disk") {
      std::fprintf(stderr,
                   "moerun-bench recovery: unknown fault '%s' (kill, stop, host, host-disk)\n",
                   fault.c_str());
      return 2;
    }
    std::map<std::string, std::vector<double>> figures;
    for (int t = 0; t < a.trials; ++t) {
      const nlohmann::json r = Trial(a, fault, t);
      std::printf("%s\n", r.dump().c_str());
      std::fflush(stdout);
      for (const char* k :
           {"detect_ms", "rendezvous_ms", "restore_to_step_ms", "fault_to_step_ms", "steps_redone"})
        if (r.contains(k) && r[k].get<int64_t>() >= 0) figures[k].push_back(r[k].get<double>());
    }
    nlohmann::json summary = {{"bench", "recovery"},
                              {"fault", fault},
                              {"trials", a.trials},
                              {"job", a.job},
                              {"at_step", a.at_step}};
    for (const auto& [k, v] : figures) summary[k + std::string("_median")] = Median(v);
    std::printf("%s\n", summary.dump().c_str());
  }
  return 0;
}

}  // namespace moerun::bench
