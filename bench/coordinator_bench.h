// moerun-bench coordinator --daemons N [--interval-ms I] [--seconds S]
// A real coordinator (ControlServer + Coordinator + RocksDB, CURVE on) in this process and N
// simulated daemons in a child process, each its own CURVE DEALER over loopback TCP, sending
// a heartbeat every I ms (spread evenly) with its registration, as moerun-worker does. After
// every daemon has registered it measures for S seconds:
//   coordinator_cpu_percent   the coordinator process's CPU time / wall time (100 = a core)
//   rtt_ms_p50/p99/max        heartbeat sent -> the coordinator's answer received
//   handled_per_s             heartbeats answered per second
// plus how long registration of all N took, and how many daemons the coordinator counted
// alive at the end (all of them, or its failure detector is wrong under load).
#pragma once

#include <cstdint>

namespace moerun::bench {

struct CoordinatorBenchArgs {
  int daemons = 4096;
  int64_t interval_ms = 1000;
  double seconds = 10;
};

int RunCoordinatorBench(const CoordinatorBenchArgs& a);

}  // namespace moerun::bench
