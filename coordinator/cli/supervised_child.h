// SupervisedChild: a process `moerun local` or `moerun slurm` keeps alive (the coordinator, a
// worker daemon, or the `srun` that runs a daemon on another node), relaunched with the same
// arguments when it dies, as the fault-recovery design asks of a cluster that moerun starts
// itself (docs/fault-tolerance.md). Each runs in its own process group (Ctrl-C reaches only
// us; we stop them in order), its output appended to its log, and is killed should the
// parent die. Not thread-safe; one owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/timeouts.h"

namespace moerun::cli {

struct SupervisedChild {
  std::string name;  // for messages: "the coordinator", "worker local-1"
  std::vector<std::string> args;
  std::string log;
  pid_t pid = -1;
  int relaunches = 0;
  int fatal_exit = 0;       // it exited with a code no relaunch can fix (an unwritable state dir)
  std::string worker_id{};  // a daemon's --id
  std::optional<std::chrono::steady_clock::time_point> dead_since{};  // the coordinator says dead
  int64_t relaunch_dead_after_ms = kLocalSilentDaemonMs;
  // Relaunches in a row that lived less than kChildQuickExitMs wait twice as long as the one
  // before (from kChildRelaunchBackoffMs, up to kChildRelaunchBackoffMaxMs): an `srun` to a
  // node Slurm took away fails at once, and must not be retried in a tight loop.
  int quick_exits = 0;
  std::chrono::steady_clock::time_point launched_at{}, relaunch_at{};
  bool waiting_to_relaunch = false;

  void Launch();
  // Relaunches a dead child (once its backoff is over); false while it is alive.
  bool ReviveIfDead();
  // A daemon whose process lives while the coordinator has counted it dead (its entry in a
  // status reply's `workers`) for relaunch_dead_after_ms is killed; ReviveIfDead relaunches
  // it.
  void KillIfSilent(const nlohmann::json& workers);
};

// SIGTERM, then SIGKILL after kChildStopTimeoutMs; reaps it. Nothing for pid <= 0.
void StopChild(pid_t pid);
// The child has not exited (reaps it when it has).
bool ChildAlive(pid_t pid);

}  // namespace moerun::cli
