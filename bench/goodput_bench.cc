#include "bench/goodput_bench.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "bench/bench_process.h"
#include "worker/trainer/trainer.h"

namespace moerun::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The run's final checkpoint digest line (`moerun checkpoint digest`), or "" on failure.
std::string Digest(const std::string& run) {
  const std::string cmd = MoerunBinary() + " checkpoint digest --run-dir " + run + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  char buf[256] = {0};
  std::string out;
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out;
}

// One fault on the running `moerun local` (pid `local`); returns what was done, or "" when
// there was no target (e.g. no trainer running at that moment).
std::string Fault(pid_t local, const std::string& kind, std::mt19937& rng) {
  std::vector<pid_t> daemons, trainers, coordinators;
  for (pid_t c : Children(local)) {
    if (Runs(c, "moerun-worker")) {
      daemons.push_back(c);
      for (pid_t t : Children(c)) trainers.push_back(t);
    } else if (Runs(c, "moerun-coordinator")) {
      coordinators.push_back(c);
    }
  }
  const bool on_trainer = kind.find("trainer") != std::string::npos;
  const std::vector<pid_t>& pool = on_trainer                   ? trainers
                                   : kind == "kill coordinator" ? coordinators
                                                                : daemons;
  if (pool.empty()) return "";
  const pid_t victim = pool[rng() % pool.size()];
  kill(victim, kind.rfind("stop", 0) == 0 ? SIGSTOP : SIGKILL);
  return kind + " (pid " + std::to_string(victim) + ")";
}

}  // namespace

int RunGoodputBench(const GoodputBenchArgs& a) {
  const std::string base = "/tmp/moerun-bench-goodput-" + std::to_string(getpid());
  fs::remove_all(base);
  fs::create_directories(base);
  // Undisturbed.
  const auto t0 = Clock::now();
  const pid_t clean = SpawnLocal(a.job, base + "/clean", a.steps);
  int status = 0;
  waitpid(clean, &status, 0);
  const double clean_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "moerun-bench goodput: the undisturbed run failed; see %s/clean.log\n",
                 base.c_str());
    return 1;
  }
  // Disturbed: a fault every fault_every_s until the run ends.
  const std::vector<std::string> kinds = {"kill trainer", "stop trainer", "kill daemon",
                                          "stop daemon", "kill coordinator"};
  std::mt19937 rng(a.seed);
  std::vector<std::string> order = kinds;
  std::shuffle(order.begin(), order.end(), rng);
  int faults_tried = 0;
  const auto t1 = Clock::now();
  const pid_t local = SpawnLocal(a.job, base + "/faulted", a.steps);
  auto next = t1 + std::chrono::milliseconds(int64_t(a.fault_every_s * 1000));
  int faults = 0;
  while (waitpid(local, &status, WNOHANG) == 0) {
    if (Clock::now() >= next) {
      // Every kind in turn, in a seeded order: five faults cover all five.
      const std::string kind = order[size_t(faults_tried++) % order.size()];
      const std::string done = Fault(local, kind, rng);
      const double at = std::chrono::duration<double>(Clock::now() - t1).count();
      std::printf("%s\n", nlohmann::json{{"bench", "goodput"},
                                         {"fault", done.empty() ? kind + ": no target" : done},
                                         {"at_s", at},
                                         {"step", trainer::LastMetricsStep(base + "/faulted")}}
                              .dump()
                              .c_str());
      std::fflush(stdout);
      faults += done.empty() ? 0 : 1;
      next += std::chrono::milliseconds(int64_t(a.fault_every_s * 1000));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double faulted_s = std::chrono::duration<double>(Clock::now() - t1).count();
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const std::string d0 = Digest(base + "/clean"), d1 = Digest(base + "/faulted");
  std::printf("%s\n", nlohmann::json{{"bench", "goodput"},
                                     {"job", a.job},
                                     {"steps", a.steps},
                                     {"fault_every_s", a.fault_every_s},
                                     {"faults", faults},
                                     {"undisturbed_s", clean_s},
                                     {"faulted_s", faulted_s},
                                     {"succeeded", ok},
                                     {"goodput", clean_s / faulted_s},
                                     {"digest_equal", !d0.empty() && d0 == d1},
                                     {"run_dir", base}}
                          .dump()
                          .c_str());
  return ok && !d0.empty() && d0 == d1 ? 0 : 1;
}

}  // namespace moerun::bench
