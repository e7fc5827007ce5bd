// moerun-bench goodput [--job FILE] [--steps N] [--fault-every-s S] [--seed N] [--max-restarts R]
// Goodput under a fault every S seconds (issue 18): the job of FILE runs under `moerun local`
// twice, N steps each. First undisturbed; then with a fault every S seconds, drawn from
//   kill trainer (SIGKILL), stop trainer (SIGSTOP, left stopped), kill daemon (SIGKILL),
//   stop daemon (SIGSTOP, left stopped: `moerun local` relaunches it), kill coordinator
// each kind in turn in a seeded order (the victim drawn at random). goodput = undisturbed wall time
// / disturbed wall time: the share of the disturbed run's time that trained steps that count. The
// final checkpoint digests of both runs must be equal. The same machine runs steps at different
// speeds from minute to minute (a shared VM: ±5%), so the result also has the faults' own cost,
// measured within each run: the step intervals beyond that run's median, summed, faulted less
// undisturbed (fault_cost_s), and goodput_fault_cost = 1 − fault_cost_s / faulted wall time. Both
// runs use a copy of FILE with fault_tolerance.max_restarts set to R: a long run with many faults
// outlasts the default 10. Prints one JSON line per fault, then the result.
#pragma once

#include <cstdint>
#include <string>

namespace moerun::bench {

struct GoodputBenchArgs {
  std::string job = "configs/tiny-cpu.yaml";
  int64_t steps = 3000;
  double fault_every_s = 60;
  uint32_t seed = 18;
  int64_t max_restarts = 100;
};

int RunGoodputBench(const GoodputBenchArgs& a);

}  // namespace moerun::bench
