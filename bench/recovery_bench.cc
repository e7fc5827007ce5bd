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
  const pid_t local = SpawnLocal(a.job, run, a.steps);
  nlohmann::json r = {{"bench", "recovery"}, {"fault", fault}, {"trial", trial}};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  pid_t victim = -1;
  while (std::chrono::steady_clock::now() < deadline && victim < 0) {
    if (trainer::LastMetricsStep(run) >= a.at_step) {
      for (pid_t w : ChildrenRunning(local, "moerun-worker"))
        for (pid_t t : Children(w)) victim = t;
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
  kill(victim, fault == "stop" ? SIGSTOP : SIGKILL);
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
  for (const auto& e : job.events()) {
    if (e.time_ms < fault_ms) continue;
    // "(1 steps to redo, from memory step 60)", "restoring step 60 from memory ..."
    if (const size_t at = e.cause.find(" steps to redo"); at != std::string::npos && redone < 0) {
      size_t begin = at;
      while (begin > 0 && std::isdigit(static_cast<unsigned char>(e.cause[begin - 1]))) --begin;
      if (begin < at) redone = std::stoll(e.cause.substr(begin, at - begin));
    }
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
    if (fault != "kill" && fault != "stop") {
      std::fprintf(stderr, "moerun-bench recovery: unknown fault '%s' (kill, stop)\n",
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
