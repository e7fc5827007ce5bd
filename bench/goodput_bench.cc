#include "bench/goodput_bench.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
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
  for (pid_t d : ChildrenRunning(local, "moerun-worker")) {
    daemons.push_back(d);
    for (pid_t t : TrainersOf(d)) trainers.push_back(t);
  }
  coordinators = ChildrenRunning(local, "moerun-coordinator");
  const bool on_trainer = kind.find("trainer") != std::string::npos;
  const std::vector<pid_t>& pool = on_trainer                   ? trainers
                                   : kind == "kill coordinator" ? coordinators
                                                                : daemons;
  if (pool.empty()) return "";
  const pid_t victim = pool[rng() % pool.size()];
  kill(victim, kind.rfind("stop", 0) == 0 ? SIGSTOP : SIGKILL);
  return kind + " (pid " + std::to_string(victim) + ")";
}

// Time between consecutive steps of a finished run beyond its own median interval, summed
// (seconds), and that median: what faults cost, measured within one run, so that the machine
// running faster or slower than during the undisturbed run does not count. Read from rank 0's
// train.log, which has every step at millisecond resolution (the coordinator's store thins old
// steps); a step trained again after a restart counts at its last time, so the interval that
// spans a restart holds the steps thrown away too. Negative when the log cannot be read.
std::pair<double, double> ExcessOverMedian(const std::string& run) {
  std::ifstream in(run + "/train.log");
  std::map<int64_t, int64_t> at;  // step -> its last time, ms
  std::string line;
  while (std::getline(in, line)) {
    std::tm tm{};
    int ms = 0;
    long long step = 0;
    if (std::sscanf(line.c_str(), "%d-%d-%d %d:%d:%d.%d info step %lld/", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &step) != 8)
      continue;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    at[step] = int64_t(timegm(&tm)) * 1000 + ms;
  }
  if (at.size() < 3) return {-1, -1};
  std::vector<int64_t> gaps;
  for (auto it = std::next(at.begin()); it != at.end(); ++it)
    gaps.push_back(it->second - std::prev(it)->second);
  std::vector<int64_t> sorted = gaps;
  std::nth_element(sorted.begin(), sorted.begin() + std::ptrdiff_t(sorted.size() / 2),
                   sorted.end());
  const int64_t median = sorted[sorted.size() / 2];
  int64_t excess = 0;
  for (int64_t g : gaps) excess += std::max<int64_t>(0, g - median);
  return {double(excess) / 1e3, double(median) / 1e3};
}

}  // namespace

int RunGoodputBench(const GoodputBenchArgs& args) {
  const std::string base = "/tmp/moerun-bench-goodput-" + std::to_string(getpid());
  fs::remove_all(base);
  fs::create_directories(base);
  GoodputBenchArgs a = args;
  a.job = base + "/job.yaml";
  if (!WriteJobWith(args.job, {{"max_restarts", std::to_string(args.max_restarts)}}, a.job)) {
    std::fprintf(stderr, "moerun-bench goodput: %s has no fault_tolerance.max_restarts line\n",
                 args.job.c_str());
    return 2;
  }
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
  const auto [clean_excess, clean_median] = ExcessOverMedian(base + "/clean");
  const auto [faulted_excess, faulted_median] = ExcessOverMedian(base + "/faulted");
  const double fault_cost = faulted_excess - clean_excess;
  std::printf("%s\n", nlohmann::json{{"bench", "goodput"},
                                     {"job", args.job},
                                     {"max_restarts", a.max_restarts},
                                     {"steps", a.steps},
                                     {"fault_every_s", a.fault_every_s},
                                     {"faults", faults},
                                     {"undisturbed_s", clean_s},
                                     {"faulted_s", faulted_s},
                                     {"succeeded", ok},
                                     {"goodput", clean_s / faulted_s},
                                     {"median_step_interval_s", {clean_median, faulted_median}},
                                     {"fault_cost_s", fault_cost},
                                     {"goodput_fault_cost", 1 - fault_cost / faulted_s},
                                     {"digest_equal", !d0.empty() && d0 == d1},
                                     {"run_dir", base}}
                          .dump()
                          .c_str());
  return ok && !d0.empty() && d0 == d1 ? 0 : 1;
}

}  // namespace moerun::bench
