// What `moerun local` and `moerun slurm` share once their coordinator and daemons run: the
// keys of a cluster they start themselves, the wait for the coordinator's endpoint, and
// following the job to its end (progress, relaunching dead children, Ctrl-C, a stop asked by
// a signal), then the summary and the exit code.
#pragma once

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/spec_loader.h"
#include "common/status.h"
#include "coordinator/cli/control_client.h"
#include "coordinator/cli/supervised_child.h"

namespace moerun::cli {

// Before anything starts: the spec (reported on stderr), a backend this build trains, --steps
// against the warm-up, the run dir's model. 0, or the exit code to return.
int CheckJobBeforeStart(const LoadedJobSpec& loaded, const std::string& file, int64_t steps,
                        const std::string& run_dir, const std::string& who);

// Submits `file` to train into `run_dir`, resuming from its checkpoints; the job id.
Result<std::string> SubmitResumingJob(ControlClient& client, const std::string& file,
                                      const std::string& run_dir, int64_t steps);

// Keys on first use in a run dir's control/: the coordinator's pair in coord_dir, one client
// pair in keys_dir for the CLI, daemons and trainers, and authorized_keys naming it. `who`
// names the command in authorized_keys' comment.
Status PrepareClusterKeys(const std::string& coord_dir, const std::string& keys_dir,
                          const std::string& who);

// The coordinator's endpoint once it has written it to <coord_dir>/endpoint; empty (with the
// reason on stderr) when it died or kCoordinatorStartTimeoutMs passed.
std::string WaitForEndpoint(const std::string& coord_dir, SupervisedChild& coord,
                            const std::string& who);

struct FollowOptions {
  std::string who;                  // "moerun local": prefixes every message
  bool progress_line = true;        // a \r progress line (a terminal) rather than one line per 10%
  bool kill_silent_daemons = true;  // SupervisedChild::KillIfSilent (daemons on this host)
  // Set from signal handlers: cancel the job (Ctrl-C), or stop it after a checkpoint
  // (`moerun slurm`: SIGUSR1/SIGTERM). stop_reason says why, for its events.
  const std::atomic<bool>* interrupted = nullptr;
  const std::atomic<bool>* stop_asked = nullptr;
  std::function<std::string()> stop_reason = [] { return std::string("asked by a signal"); };
};

struct FollowResult {
  std::string phase;  // SUCCEEDED, FAILED, CANCELLED, STOPPED; empty: lost the coordinator
  nlohmann::json detail;
  bool cancelled = false;  // we cancelled it (Ctrl-C)
  int fatal_exit = 0;      // a child exited with a code no relaunch can fix
};

// Follows `job` until it ends, keeping `coord` and `daemons` alive.
FollowResult FollowJob(ControlClient& client, const std::string& job, SupervisedChild& coord,
                       std::vector<SupervisedChild>& daemons, const FollowOptions& opts);

// Prints the summary ("job J SUCCEEDED in 1 min: step 300/300, loss ...") and returns the
// exit code: 0 SUCCEEDED, kExitStopped STOPPED, 130 cancelled by Ctrl-C, 1 otherwise.
int ReportOutcome(const FollowResult& r, const std::string& job, const std::string& run_dir,
                  double wall_s, const std::string& who);

}  // namespace moerun::cli
