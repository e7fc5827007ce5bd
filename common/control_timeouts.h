// Every timeout and interval of the control plane (docs/architecture.md §6), in one place, each
// with its unit in its name. Heartbeat and progress timeouts of a job come from its spec
// (fault_tolerance.*); these are the protocol's own.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun {

// DEALER sockets reconnect to a coordinator that went away: first after this long, then
// doubling up to the maximum (libzmq's own backoff).
inline constexpr int kControlReconnectMs = 100;
inline constexpr int kControlReconnectMaxMs = 500;
// Messages a DEALER queues while its coordinator is unreachable; beyond that they are dropped
// (heartbeats and step reports are superseded by the next one anyway).
inline constexpr int kControlSendQueueMessages = 1000;
// How often the coordinator's loop runs its timers (dead daemons, watchdog, backoff, queue).
inline constexpr int kCoordinatorTickMs = 50;
// A CLI request (submit, status, cancel, ...) gives up after this long without an answer.
inline constexpr int64_t kCliRequestTimeoutMs = 10000;
// A trainer asks for its generation's rendezvous table every kRendezvousRetryMs until it has
// it, and gives up (exit code 1) after kRendezvousTimeoutMs.
inline constexpr int64_t kRendezvousRetryMs = 1000;
inline constexpr int64_t kRendezvousResendMs = 10;  // the ask could not leave yet
inline constexpr int64_t kRendezvousTimeoutMs = 120000;
// STARTING must reach RUNNING (every rank at the rendezvous) within this long, or the start
// counts as a failure of the generation.
inline constexpr int64_t kJobStartTimeoutMs = 180000;
// The coordinator repeats StartTrainers to a daemon whose heartbeats do not show the ranks
// after this long (the first message may have been lost with a coordinator restart).
inline constexpr int64_t kStartTrainersResendMs = 5000;
// A log request forwarded to a daemon is answered with an error after this long.
inline constexpr int64_t kForwardedRequestTimeoutMs = 5000;
// Log bytes per `moerun logs` answer.
inline constexpr std::size_t kLogChunkBytes = 256 << 10;
// Stopping trainers: a cancelled job's trainers get kCancelGraceMs after SIGTERM to finish
// their step and write a checkpoint before SIGKILL; a failed generation's get none (its
// collectives are broken, waiting only delays the restart).
inline constexpr int64_t kCancelGraceMs = 5000;
inline constexpr int64_t kFenceGraceMs = 0;
// The daemon's wait for a message before it polls its trainers.
inline constexpr int kDaemonTickMs = 50;
// A daemon is shown "late" once silent for max(kLateHeartbeatIntervals x its heartbeat
// interval, half its heartbeat timeout); "dead" at the timeout itself.
inline constexpr int64_t kLateHeartbeatIntervals = 2;

}  // namespace moerun
