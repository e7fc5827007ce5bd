// TrainerSupervisor: the worker daemon's children (docs/architecture.md §1). Starts one trainer
// process per assigned rank, reports each exit with its code or signal, and stops trainers on
// command: SIGTERM first, SIGKILL after a grace period, so a hung trainer cannot outlive its
// generation. Each child gets its own process group (a trainer's helpers die with it), its
// stdout/stderr in a log file, and SIGKILL when the supervising process dies (so a daemon
// killed with SIGKILL leaves no orphan trainers behind).
//
// Poll() reaps finished children without blocking and fires on_exit for each. It also beats
// into each child's BeatFile (common/beat_file.h), when the launch names one, and finds
// frozen children: a trainer stopped (SIGSTOP, state T in /proc/<pid>/stat), or whose own
// beat is older than the frozen timeout, is killed, and its exit says which. A trainer that
// hangs with its beat thread alive is the coordinator's progress watchdog's to find.
//
// Warm standbys (common/standby_role.h): StartStandby() keeps a `<program> standby` process
// waiting, and Start() of a launch of that program hands it the launch's role instead of
// exec'ing a new process. A standby is no trainer: Running() and on_exit leave it out, and one
// that ends unused just leaves the pool.
// Thread-safe for one owner thread plus Stop*/Running from others.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/beat_file.h"
#include "common/status.h"
#include "common/timeouts.h"

namespace moerun::worker {

struct TrainerExit {
  std::string job_id;
  uint64_t generation = 0;
  int rank = 0;
  pid_t pid = 0;
  int exit_code = -1;  // when exited normally, else -1
  int signal = 0;      // when killed by a signal, else 0
  // Why it was stopped, when the supervisor stopped it: a frozen trainer killed, or the
  // reason given to Terminate() (a fence, an expired lease).
  std::string cause;
  // "exited with code 3" / "killed by signal 9 (Killed)", after the cause when there is one:
  // "stopped by its daemon: ... (killed by signal 15 (Terminated))".
  std::string Describe() const;
};

struct TrainerLaunch {
  std::string job_id;
  uint64_t generation = 0;
  int rank = 0;
  std::vector<std::string> argv;  // argv[0] is the program path
  std::string log_path;           // stdout and stderr, appended
  // Created before the start and removed after the exit; empty: no beats.
  std::string beat_path{};
};

class TrainerSupervisor {
 public:
  explicit TrainerSupervisor(std::function<void(const TrainerExit&)> on_exit);
  ~TrainerSupervisor();  // stops every child

  // *warm (when given): whether a standby became the trainer.
  Result<pid_t> Start(const TrainerLaunch& launch, bool* warm = nullptr);
  // Starts `program standby`, its output (until it takes a role) appended to log_path.
  Status StartStandby(const std::string& program, const std::string& log_path);
  size_t Standbys() const;
  // Reaps children that ended; returns how many.
  int Poll();
  // SIGTERM now; SIGKILL to whoever is still alive after grace_ms (blocking, polling).
  void StopJob(const std::string& job_id, int64_t grace_ms = kTrainerStopGraceMs);
  // Stops trainers of `job_id` whose generation is older than `generation` (fencing).
  void StopOlderThan(const std::string& job_id, uint64_t generation,
                     int64_t grace_ms = kTrainerStopGraceMs);
  size_t Running() const;
  // 0 (the default) never kills a frozen trainer.
  void set_frozen_timeout_ms(int64_t ms);

  // The same stop for an event loop that must not block: SIGTERM now to trainers of job_id
  // with generation < below_generation, and Poll() sends SIGKILL to any of them still alive
  // grace_ms later; grace_ms 0 (a fence) is SIGKILL now. Repeating it for a trainer already
  // stopping changes nothing but a shorter grace. `cause` becomes the exit's cause (the first one
  // given wins).
  void Terminate(const std::string& job_id, uint64_t below_generation,
                 int64_t grace_ms = kTrainerStopGraceMs, const std::string& cause = "");
  // Trainers of job_id with generation < below_generation that are still alive.
  size_t Count(const std::string& job_id, uint64_t below_generation) const;
  // Whether a trainer Terminate() sent SIGKILL to is still to be reaped.
  bool Killing() const;

 private:
  void StopWhere(const std::function<bool(const TrainerLaunch&)>& match, int64_t grace_ms);

  std::function<void(const TrainerExit&)> on_exit_;
  mutable std::mutex mu_;
  std::map<pid_t, TrainerLaunch> children_;
  std::map<pid_t, std::chrono::steady_clock::time_point> kill_at_;  // after Terminate()
  int64_t frozen_timeout_ms_ = 0;
  std::map<pid_t, std::chrono::steady_clock::time_point> stopped_since_;  // seen in state T
  std::map<pid_t, std::string> cause_;  // pid -> why the supervisor stopped it
  std::map<pid_t, std::unique_ptr<BeatFile>> beats_;
  struct Standby {
    std::string program;
    int fd = -1;  // our end of its stdin (a socket: a write to a dead one fails, no SIGPIPE)
  };
  std::map<pid_t, Standby> standbys_;
  // Takes a standby of `program` from the pool and gives it the launch; its pid, or -1 when
  // there is none or it could not take the role (then it is killed).
  pid_t Activate(const TrainerLaunch& launch);
};

}  // namespace moerun::worker
