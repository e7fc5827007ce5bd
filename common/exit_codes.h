// Process exit codes shared by every moerun binary, and the one mapping from a Status to the
// code a process exits with. The coordinator's restart policy reads a trainer's exit code:
// codes in the "never retry" range fail the job at once, because restarting cannot fix a bad
// config or unreadable data.
#pragma once

#include "common/status.h"

namespace moerun {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;        // a runtime failure; retrying may help
inline constexpr int kExitInvalidConfig = 2;  // bad job spec or command line: never retry
inline constexpr int kExitBadData = 3;        // data missing or unreadable: never retry
inline constexpr int kExitUnsupported = 4;    // asks for a feature this build lacks: never retry
// The checkpoint step a trainer was told to restore is unreadable (a shard missing, a CRC
// that does not match): the coordinator drops that step and restarts from the one before.
inline constexpr int kExitBadCheckpoint = 5;
// `moerun local` / `moerun slurm`: the job ended STOPPED, after a last checkpoint, on request
// (`moerun stop`, Slurm's warning before a preemption or the time limit): running the same
// command again continues it. EX_TEMPFAIL of sysexits.h; the sbatch script requeues on it.
inline constexpr int kExitStopped = 75;
// Stopped by SIGINT or SIGTERM after writing a checkpoint (128 + SIGINT, as shells report).
inline constexpr int kExitInterrupted = 130;

// True when restarting the process with the same inputs cannot succeed.
inline constexpr bool IsNonRetryableExit(int code) {
  return code == kExitInvalidConfig || code == kExitBadData || code == kExitUnsupported;
}

// The exit code for a process's final status:
//   OK                                     0
//   InvalidArgument (spec, flags, layout)  2  never retried
//   DataLoss (the job's data)              3  never retried
//   Unimplemented (a missing feature)      4  never retried
//   Corruption (an unreadable checkpoint)  5  the coordinator restores the step before
//   Cancelled (SIGINT/SIGTERM)             130
//   anything else                          1  retried with backoff: TimedOut and Aborted
//     (a peer gone), Unavailable, IOError, ResourceExhausted (out of memory: a restart
//     frees it, and max_restarts bounds a job that never fits), Internal, ...
inline int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kInvalidArgument:
      return kExitInvalidConfig;
    case Status::Code::kDataLoss:
      return kExitBadData;
    case Status::Code::kUnimplemented:
      return kExitUnsupported;
    case Status::Code::kCorruption:
      return kExitBadCheckpoint;
    case Status::Code::kCancelled:
      return kExitInterrupted;
    default:
      return kExitFailure;
  }
}

}  // namespace moerun
