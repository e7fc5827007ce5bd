// WorkerDaemon: the per-host daemon (docs/architecture.md §1, §6): the sockets, processes and
// files around a DaemonCore (worker/daemon/daemon_core.h), which makes every decision. It registers
// with the coordinator, sends a heartbeat every interval that carries its registration and the
// state of each of its trainers, starts one trainer process per assigned rank (TrainerSupervisor),
// reports every trainer exit at once and again in each heartbeat until the coordinator acknowledges
// it, and stops trainers on command or when their generation is over (a new generation of a job
// starts only after the old one's trainers on this host are gone). It serves the trainers' logs to
// the coordinator in chunks.
//
// The coordinator may vanish and come back (restart, network): the DEALER reconnects with
// backoff, heartbeats go on, and the daemon never exits because of it. Its trainers keep
// training for as long as the coordinator's heartbeat timeout (the lease): after that the
// coordinator has declared this daemon dead and restarted its ranks elsewhere, so the daemon
// stops them itself, unless the coordinator's address refuses connections (it is restarting;
// docs/fault-tolerance.md, "The lease"). Files under state_dir:
//   jobs/<job>/gen-<G>.yaml         the spec its trainers of generation G read
//   logs/<job>/rank-<R>.log         each trainer's stdout and stderr, all generations
//   trainers/<job>.g<G>.r<R>.beat   beats between this daemon and the trainer (while it runs)
//   trainers/<job>.g<G>.r<R>.flight the trainer's flight recorder (kept for the coordinator)
//   logs/standby.log                warm standby trainers' output before they take a role
//   worker.log                      the daemon's own log
// and under memory_dir (tmpfs): <job>/rank-<R>.slot-<K>.mem, the trainers' memory snapshots
// (worker/checkpoint/memory_snapshots.h).
// Run() owns everything on the calling thread; the stop flag may be set from a signal.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/connection_monitor.h"
#include "common/control_socket.h"
#include "common/status.h"
#include "common/timeouts.h"
#include "worker/daemon/daemon_core.h"
#include "worker/daemon/trainer_supervisor.h"

namespace moerun::worker {

struct DaemonOptions {
  std::string coordinator;              // control address, e.g. tcp://10.0.0.1:7100
  std::string keys_dir;                 // client.key(+_secret) and coordinator.key
  std::string state_dir;                // logs and specs, see above
  std::string id;                       // unique in the cluster; the host name by default
  std::string host;                     // shown to people
  int64_t devices = 1;                  // trainer slots
  std::string backend = "cpu";          // "cpu" | "cuda"
  std::string data_host = "127.0.0.1";  // trainers bind their data plane here
  std::string trainer_program;          // the `moerun` binary
  // Trainers' memory snapshots, one directory per job (tmpfs): they outlive a trainer, and
  // the daemon removes a job's once the job is over here.
  std::string memory_dir;
  // Warm standby trainers kept ready (TrainerSupervisor::StartStandby): a rank started here
  // takes one instead of a new process. Replaced kStandbyRefillDelayMs after the last start.
  int64_t standby_trainers = 0;
};

class WorkerDaemon {
 public:
  static Result<std::unique_ptr<WorkerDaemon>> Create(DaemonOptions opts);
  ~WorkerDaemon();

  // Until `stop`, or until the coordinator refuses this daemon for good (another daemon holds
  // its id); then stops every trainer (SIGTERM, SIGKILL after the grace period). The process's
  // exit code: 0, or 2 after a refusal.
  int Run(const std::atomic<bool>& stop);
  // The routing id this daemon connects with: "worker:<id>#<hash of its home>", so that a
  // second daemon with the same id still reaches the coordinator, which tells it so.
  static std::string RoutingId(const std::string& id, const std::string& home);

 private:
  explicit WorkerDaemon(DaemonOptions opts);
  // "host:state dir": what makes a relaunched daemon the same daemon.
  std::string Home() const { return opts_.host + ":" + opts_.state_dir; }
  // Carries out what the core decided: stops, starts, sends, log chunks, log lines.
  void Execute(const DaemonActions& actions);
  // A start: the spec file, the command line, the process. Its failure is the rank's end.
  Status StartRank(const DaemonActions::Start& s);
  void ServeLog(const DaemonActions::Log& log);
  // The job is over here: its memory snapshots and flight recorders go.
  void RemoveJobFiles(const std::string& job_id);
  // A generation's flight recorders (trainers/<job>.g<G>.r*.flight) in one Reply.
  void ServeFlight(const DaemonActions::Flight& f);
  void SendEnvelopeOrWarn(const Envelope& e);
  std::string LogPath(const std::string& job_id, int rank) const;
  // <state dir>/trainers/<job>.g<generation>.r<rank>: + ".beat", + ".flight".
  std::string TrainerFilePrefix(const std::string& job_id, uint64_t generation, int rank) const;
  // The jobs with a directory under memory_dir.
  std::vector<std::string> MemoryJobs() const;
  // Tells the core which, for its heartbeats (every kMemoryJobsListMs).
  void ListMemoryJobs();
  // Starts a standby when fewer than standby_trainers wait and no trainer started lately.
  void KeepStandbys();
  // Flight recorder files under <state dir>/trainers whose names start with `prefix`.
  std::vector<std::filesystem::path> FlightFiles(const std::string& prefix) const;

  DaemonOptions opts_;
  SystemClock clock_;
  DaemonCore core_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<ConnectionMonitor> link_;  // dealer_'s connection; destroyed before it
  TrainerSupervisor supervisor_;
  int64_t memory_jobs_listed_ms_ = 0;
  std::string fatal_;  // DaemonActions::fatal, once given
  int64_t last_trainer_start_ms_ = -kStandbyRefillDelayMs;
};

}  // namespace moerun::worker
