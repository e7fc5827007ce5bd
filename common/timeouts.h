// Every timeout, interval and grace period of moerun in one place, each with its unit in its
// name: the control plane (docs/architecture.md §6), the data plane (§5), process supervision
// and the CLI. Heartbeat and progress timeouts of a job come from its spec (fault_tolerance.*);
// these are the system's own. Sizes and counts are in common/limits.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun {

// DEALER sockets reconnect to a coordinator that went away: first after this long, then
// doubling up to the maximum (libzmq's own backoff).
inline constexpr int kControlReconnectMs = 100;
inline constexpr int kControlReconnectMaxMs = 200;
// A connect attempt that fails within this long was refused (a reset or an unreachable
// answer): nothing listens at the coordinator's address, and a daemon's lease waits. One that
// hangs longer is a silent network and proves nothing (common/connection_monitor.h).
inline constexpr int64_t kConnectRefusedWithinMs = 1000;
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
// A trainer opening its checkpoint shard whose lock another process holds (an earlier
// generation's writer that has not exited yet) retries every kShardLockPollMs for up to
// kShardLockWaitMs, then exits with a retryable error.
inline constexpr int64_t kShardLockWaitMs = 5000;
inline constexpr int64_t kShardLockPollMs = 50;
// A writer rank that finished waits up to this long for its last step's commit, after which it
// deletes the steps that commit supersedes (without it they stay on disk).
inline constexpr int64_t kLastCommitWaitMs = 2000;
// A daemon lists the jobs whose memory snapshots it holds this often, for its heartbeats.
inline constexpr int64_t kMemoryJobsListMs = 1000;
// A log request forwarded to a daemon is answered with an error after this long.
inline constexpr int64_t kForwardedRequestTimeoutMs = 5000;
// A hang's flight recorders: the coordinator waits this long for the daemons' answers before
// writing the diagnosis with what it has.
inline constexpr int64_t kFlightCollectTimeoutMs = 2000;
// Log bytes per `moerun logs` answer.
// Stopping trainers: a cancelled job's trainers get kCancelGraceMs after SIGTERM to finish
// their step and write a checkpoint before SIGKILL; a failed generation's get none (its
// collectives are broken, waiting only delays the restart).
inline constexpr int64_t kCancelGraceMs = 5000;
inline constexpr int64_t kFenceGraceMs = 0;
// `moerun stop` (and Slurm's warning before a preemption or the time limit, which `moerun
// slurm` turns into one): the trainers, told over their control channels, get this long to
// finish their step, write its checkpoint and exit (then they are killed), within the 120 s
// `#SBATCH --signal=B:USR1@120` leaves. Once
// every rank has exited, the coordinator waits up to kStopShardWaitMs for a new commit (the
// trainers' shard reports can trail the daemons' exit reports) before it ends the job STOPPED
// with whatever is committed.
inline constexpr int64_t kStopCheckpointGraceMs = 90000;
inline constexpr int64_t kStopShardWaitMs = 2000;
// The daemon's wait for a message before it polls its trainers; shorter while trainers it
// killed are not reaped yet, since a restart waits on them (a fence).
inline constexpr int kDaemonTickMs = 50;
inline constexpr int kDaemonReapTickMs = 5;
// A daemon is shown "late" once silent for max(kLateHeartbeatIntervals x its heartbeat
// interval, half its heartbeat timeout); "dead" at the timeout itself.
inline constexpr int64_t kLateHeartbeatIntervals = 2;
// A daemon dead (silent) this long is forgotten unless a job waits for it
// (`--forget-dead-workers-after-ms`); `moerun worker remove ID` forgets one at once.
inline constexpr int64_t kForgetDeadWorkerMs = 3600 * 1000;
// A control socket's unsent messages get this long when it closes.
inline constexpr int kControlLingerMs = 1000;
// The coordinator loop's longest sleep: also how long an HTTP request may wait to be picked up.
inline constexpr int kControlPollMs = 10;
// An HTTP API request waiting for the coordinator loop's answer.
inline constexpr int64_t kHttpRequestTimeoutMs = 5000;
// An HTTP connection with no request under way (before its first byte, or between keep-alive
// requests) is closed after this long.
inline constexpr int64_t kHttpIdleTimeoutMs = 5000;
// A request's line, headers and body must all arrive within this long of its first byte,
// however slowly they trickle in (a client sending a byte a second is cut off here).
inline constexpr int64_t kHttpRequestReadTimeoutMs = 10000;
// Writing a response to a client that does not read it.
inline constexpr int64_t kHttpWriteTimeoutMs = 5000;
// Each of those waits looks this often whether the server is stopping.
inline constexpr int64_t kHttpStopPollMs = 100;
// Before an HTTP connection closes, what its client sent that was never read is read for up to
// this long (and kHttpLingerBytes), so the close is a FIN the client's answer survives. (At 200 ms
// and 1 MiB a client streaming a refused upload on a loaded 2-core machine sometimes had not
// read its answer yet: the close became a reset and the answer was lost.)
inline constexpr int64_t kHttpLingerMs = 1000;
// How soon the CURVE (ZAP) handler notices it should stop.
inline constexpr int kZapPollMs = 50;

// ---- process supervision -------------------------------------------------------------------
// A trainer asked to stop gets this long after SIGTERM before SIGKILL (at most; a fence gives
// kFenceGraceMs).
inline constexpr int64_t kTrainerStopGraceMs = 5000;
// A trainer started by a daemon beats into its BeatFile this often (common/beat_file.h) and
// reads its daemon's beat as often.
inline constexpr int64_t kTrainerBeatMs = 100;
// A daemon shutting down, or dropping a job it no longer runs, gives its trainers this long.
inline constexpr int64_t kShutdownGraceMs = 1000;
// `moerun local`: the coordinator must write its endpoint within the first; a child asked to
// stop gets the second; the state is polled every kLocalPollMs (each poll waiting up to
// kLocalPollTimeoutMs for an answer), and the run is given up after kLocalGiveUpMs without
// one from a (possibly relaunched) coordinator.
inline constexpr int64_t kCoordinatorStartTimeoutMs = 10000;
inline constexpr int64_t kChildStopTimeoutMs = 15000;
inline constexpr int64_t kLocalPollMs = 500;
inline constexpr int64_t kLocalPollTimeoutMs = 1000;
inline constexpr int64_t kLocalGiveUpMs = 60000;
// `moerun slurm` asks again for a stop the coordinator does not show under way this often (a
// coordinator relaunched meanwhile forgot it).
inline constexpr int64_t kStopAskAgainMs = 5000;
// `moerun local` kills and relaunches a daemon whose process lives but which the coordinator
// has counted dead this long (frozen, deadlocked, cut off), as it relaunches one that died:
// a heartbeat timeout of silence was its chance, its trainers have fenced themselves and the
// job restarts without them; without a spare their ranks wait for this daemon, so the sooner
// the better (one poll, to see it twice). `--relaunch-dead-after-ms` sets it.
inline constexpr int64_t kLocalSilentDaemonMs = 500;

// A child `moerun local` or `moerun slurm` relaunches: one that exited within kChildQuickExitMs
// of its start waits kChildRelaunchBackoffMs before the next launch, doubling with every
// quick exit in a row, up to kChildRelaunchBackoffMaxMs (an `srun` to a node that is gone).
inline constexpr int64_t kChildQuickExitMs = 5000;
inline constexpr int64_t kChildRelaunchBackoffMs = 500;
inline constexpr int64_t kChildRelaunchBackoffMaxMs = 30000;
// A parent waiting for a child process to start or stop checks this often.
inline constexpr int64_t kChildPollMs = 10;
// A worker daemon replaces a warm standby trainer that became a trainer this long after its
// last trainer start, so the new standby's start does not compete with the restart's first
// steps for the host's cores.
inline constexpr int64_t kStandbyRefillDelayMs = 3000;

// ---- the CLI ---------------------------------------------------------------------------------
// A request's wait on the coordinator is sliced this finely (to notice a refused CURVE key).
inline constexpr int64_t kCliPollSliceMs = 100;
// `moerun status --watch` redraws (or, with the coordinator away, retries) this often;
// `moerun logs --follow` asks for more this often.
inline constexpr int64_t kStatusWatchIntervalMs = 1000;
inline constexpr int64_t kLogFollowIntervalMs = 500;

// ---- data plane ----------------------------------------------------------------------------
// A collective or point-to-point call without progress for this long fails with TimedOut
// naming the peer (the default of --data-plane-timeout-ms).
inline constexpr int64_t kDataPlaneTimeoutMs = 30000;
// NCCL calls are asynchronous: their completion (and any async error) is checked this often.
inline constexpr int kNcclPollUs = 50;
// The ZeroMQ data plane's longest wait before Abort() is noticed.
inline constexpr int kDataPlanePollSliceMs = 20;
// On a normal close, queued sends get this long to leave (the last collective's messages must
// reach peers even when this process exits right after). After Abort() or a timeout (a peer is
// gone): none.
inline constexpr int kDataPlaneCloseLingerMs = 10000;

}  // namespace moerun
