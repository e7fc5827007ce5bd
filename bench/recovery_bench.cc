#include "bench/recovery_bench.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/clock.h"
#include "coordinator/state/coordinator_store.h"
#include "worker/trainer/trainer.h"

namespace moerun::bench {
namespace {

namespace fs = std::filesystem;
using coordinator::JobPhase;

std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

bool Runs(pid_t pid, const std::string& program) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  return s.find(program) != std::string::npos;
}

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
  const std::string moerun = (fs::read_symlink("/proc/self/exe").parent_path() / "moerun").string();
  std::fflush(stdout);
  const pid_t local = fork();
  if (local == 0) {
    FILE* out = std::fopen((run + ".log").c_str(), "w");
    if (out) {
      dup2(fileno(out), STDOUT_FILENO);
      dup2(fileno(out), STDERR_FILENO);
    }
    execl(moerun.c_str(), moerun.c_str(), "local", a.job.c_str(), "--run-dir", run.c_str(),
          "--steps", std::to_string(a.steps).c_str(), "--no-progress", nullptr);
    _exit(127);
  }
  nlohmann::json r = {{"bench", "recovery"}, {"fault", fault}, {"trial", trial}};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  pid_t victim = -1;
  while (std::chrono::steady_clock::now() < deadline && victim < 0) {
    if (trainer::LastMetricsStep(run) >= a.at_step) {
      for (pid_t w : Children(local))
        if (Runs(w, "moerun-worker"))
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
  int64_t recovering_ms = -1, running_ms = -1;
  for (const auto& e : job.events()) {
    if (e.time_ms < fault_ms) continue;
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
      for (const char* k : {"detect_ms", "rendezvous_ms", "restore_to_step_ms", "fault_to_step_ms"})
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
