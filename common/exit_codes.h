// Process exit codes shared by every moerun binary. The coordinator's restart policy reads
// a trainer's exit code: codes in the "never retry" range fail the job at once, because
// restarting cannot fix a bad config or unreadable data.
#pragma once

namespace moerun {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;        // a runtime failure; retrying may help
inline constexpr int kExitInvalidConfig = 2;  // bad job spec or command line: never retry
inline constexpr int kExitBadData = 3;        // data missing or unreadable: never retry
inline constexpr int kExitUnsupported = 4;    // asks for a feature this build lacks: never retry
// The checkpoint step a trainer was told to restore is unreadable (a shard missing, a CRC
// that does not match): the coordinator drops that step and restarts from the one before.
inline constexpr int kExitBadCheckpoint = 5;

// True when restarting the process with the same inputs cannot succeed.
inline constexpr bool IsNonRetryableExit(int code) {
  return code == kExitInvalidConfig || code == kExitBadData || code == kExitUnsupported;
}

}  // namespace moerun
