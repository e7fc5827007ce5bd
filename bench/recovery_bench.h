// moerun-bench recovery [--job FILE] [--trials N] [--steps S] [--at-step K]
//                       [--faults kill,stop,host,host-disk]
// Fault recovery on a real `moerun local` run (coordinator, daemons, trainers): at step K a
// trainer is SIGKILLed ("kill") or SIGSTOPped ("stop"), or a whole host is lost ("host": the
// trainers of a daemon that runs ranks SIGKILLed and the daemon SIGSTOPped, with one spare
// daemon for them to move to; "host-disk" the same with checkpoint.memory_replica_interval_steps 0,
// so the moved ranks cannot restore from memory), the run goes on to its end, and the coordinator's
// own record (events and per-step reports in its RocksDB) gives, per trial:
//   detect_ms              fault -> the job enters RECOVERING
//   rendezvous_ms          RECOVERING -> the new generation meets (RUNNING)
//   restore_to_step_ms     RUNNING -> its first completed step (checkpoint restore included)
//   fault_to_step_ms       fault -> the first step completed after it
//   steps_redone           steps trained again (from the restart's events)
//   restored_from          "memory" (checkpoints in memory) or "disk"
// One JSON line per trial, then one with the medians per fault.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moerun::bench {

struct RecoveryBenchArgs {
  std::string job = "configs/tiny-cpu.yaml";
  int trials = 3;
  int64_t steps = 120;
  int64_t at_step = 60;
  std::vector<std::string> faults = {"kill", "stop"};
};

int RunRecoveryBench(const RecoveryBenchArgs& a);

}  // namespace moerun::bench
