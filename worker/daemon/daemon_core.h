// DaemonCore: a worker daemon's decisions (docs/architecture.md §6), apart from its sockets,
// processes and files: fed the coordinator's envelopes, its trainers' exits and the ticks of a
// Clock, it answers with actions for the daemon to carry out. Unit-tested by stepping a
// FakeClock (tests/unit/test_daemon_core.cc); WorkerDaemon (worker/daemon/worker_daemon.h)
// runs it against ZeroMQ and TrainerSupervisor.
//  - Registration: Register every heartbeat interval until Registered, then Heartbeat; every
//    one carries the host, the slots and each trainer's state.
//  - Exits: reported at once (TrainerExited) and again in every heartbeat until the
//    coordinator acknowledges them.
//  - Fencing: a start of generation G first stops the job's older generations here and starts
//    G's ranks only once none of them is left; StopTrainers stops those below a generation.
//  - The lease: with no message from the coordinator for its heartbeat timeout, it has
//    declared this daemon dead and restarted its ranks elsewhere, so every trainer here stops
//    (once; a later answer renews the lease). A coordinator silent for three intervals is
//    "away": heartbeats go on while the socket reconnects, and the daemon never exits for it.
//    While connecting to the coordinator is refused outright, nothing listens there and
//    nothing counts this daemon's silence (a restarted coordinator counts from its own
//    start), so the lease counts from the latest refusal instead, at most one more timeout:
//    a coordinator restart shorter than the heartbeat timeout stops no trainer.
//  - Every stop carries its reason, which becomes the trainer's exit cause.
// Bodies are read by FromJson (common/message_bodies.h); a malformed one is dropped by name
// and changes nothing. Not thread-safe: one thread feeds it.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "common/connection_monitor.h"
#include "common/message_bodies.h"
#include "common/protocol.h"

namespace moerun::worker {

struct DaemonIdentity {
  std::string id, host, backend = "cpu", data_host = "127.0.0.1";
  int64_t devices = 1;  // trainer slots
  int64_t pid = 0;      // of the daemon process: a new one tells the coordinator it restarted
  std::string home{};   // "host:state dir": the same daemon across relaunches
};

// What the daemon is to do, in this order: stop, then start, then send, then serve logs and
// flight recorders.
struct DaemonActions {
  struct Stop {
    std::string job_id;
    uint64_t below_generation = 0;  // UINT64_MAX: every generation
    int64_t grace_ms = 0;
    std::string cause;      // "stopped by its daemon: ...", the trainers' exit cause
    bool job_over = false;  // the coordinator ended the job here: its memory snapshots go too
  };
  struct Start {
    std::string job_id;
    uint64_t generation = 0;
    int rank = 0;
    int device = -1;  // the lowest slot no running trainer holds; -1: none free
    StartTrainersBody how;
  };
  struct Log {
    std::string job_id;
    LogRequestBody request;
  };
  // The coordinator asks for the flight recorders of a generation's trainers here (a hang).
  struct Flight {
    std::string job_id;
    uint64_t generation = 0;
    std::string request_id;
  };
  std::vector<Stop> stops;
  std::vector<Start> starts;
  std::vector<Envelope> sends;
  std::vector<Log> logs;
  std::vector<Flight> flights;
  // Lines for the daemon's log: news ("registered") and warnings ("the coordinator is away").
  std::vector<std::string> notes, warnings;
  // The coordinator refused this daemon for good (another daemon holds its id): the daemon
  // prints this and exits 2.
  std::string fatal;
};

// A trainer's end as the daemon saw it.
struct TrainerEnd {
  std::string job_id;
  uint64_t generation = 0;
  int rank = 0;
  int64_t pid = 0;
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string text;  // "exited with code 3: <the trainer's reason>"
};

class DaemonCore {
 public:
  // `clock` is monotonic and outlives the core.
  DaemonCore(DaemonIdentity identity, const Clock* clock);

  // A message from the coordinator.
  DaemonActions OnEnvelope(const Envelope& e);
  // The connection to the coordinator changed (common/connection_monitor.h).
  DaemonActions OnLink(const LinkEvent& e);
  // A trainer ended (or could not start: pid 0).
  DaemonActions OnTrainerEnd(const TrainerEnd& end);
  // A Start the daemon carried out: the trainer runs as `pid`.
  void OnStarted(const std::string& job_id, uint64_t generation, int rank, int64_t pid);
  // Time passed: heartbeats, pending starts, the lease.
  DaemonActions Tick();
  // A heartbeat now (the daemon's last one, carrying the exits its shutdown caused).
  Envelope HeartbeatNow();
  // Jobs with a trainer here, running or not yet acknowledged.
  std::set<std::string> jobs() const;
  // Jobs whose memory snapshots this host holds (their directories under --memory-dir), for
  // the heartbeat: the coordinator answers a job that is over, or that it does not know, with a
  // stop that ends it here (its snapshots go), so a daemon that was frozen or away when the
  // job ended does not keep them.
  void set_memory_jobs(std::vector<std::string> jobs) { memory_jobs_ = std::move(jobs); }

  // Trainers running, and those ended but not yet acknowledged.
  size_t running() const;
  size_t unacknowledged() const;
  bool registered() const { return registered_; }
  bool self_fenced() const { return self_fenced_; }
  bool coordinator_away() const { return away_; }
  int64_t heartbeat_interval_ms() const { return heartbeat_interval_ms_; }
  // The coordinator's heartbeat timeout (0 until registered): also how long a trainer may
  // stay frozen before its daemon kills it.
  int64_t lease_ms() const { return lease_ms_; }

 private:
  using Key = std::tuple<std::string, uint64_t, int>;  // job, generation, rank
  struct Trainer {
    int64_t pid = 0;
    bool running = true;
    int exit_code = -1, signal = 0;
    std::string text;
    int device = -1;
  };
  struct Pending {
    std::string job_id;
    uint64_t generation = 0;
    StartTrainersBody how;
  };

  void OnStart(const Envelope& e, DaemonActions* out);
  void OnStop(const Envelope& e, DaemonActions* out);
  void OnAcked(const std::vector<TrainerAck>& acked);
  void StartPending(DaemonActions* out);
  void Send(MessageType type, const std::string& job_id, uint64_t generation, nlohmann::json body,
            DaemonActions* out) const;
  nlohmann::json Heartbeat(int64_t seq) const;
  nlohmann::json TrainerJson(const Key& key, const Trainer& t) const;
  bool Stopping(const std::string& job_id, uint64_t below_generation) const;
  int FreeDevice() const;
  // How long the lease has run: silence since the last answer, or since the latest refused
  // connection when that came later (by at most one more lease).
  int64_t LeaseSilenceMs(int64_t now) const;

  DaemonIdentity identity_;
  const Clock* clock_;
  std::map<Key, Trainer> trainers_;  // running, or ended and not yet acknowledged
  std::set<Key> started_;            // ever started: a repeated start is ignored
  std::vector<Pending> pending_;     // waiting for an older generation to stop
  std::vector<Key> new_ends_;        // to report at once
  int64_t heartbeat_interval_ms_ = 1000;
  int64_t lease_ms_ = 0;  // the coordinator's heartbeat timeout; 0 until Registered
  int64_t seq_ = 0;
  int64_t next_beat_ms_ = 0;
  int64_t last_answer_ms_ = 0;
  int64_t last_refused_ms_ = -1;  // the coordinator's address refused a connection; -1: never
  bool key_refused_ = false;      // said once per run of refusals of this daemon's key
  bool registered_ = false, away_ = false, self_fenced_ = false;
  std::vector<std::string> memory_jobs_;
};

// Job ids name directories on the daemon's host: only what the coordinator hands out
// ([A-Za-z0-9._-], at most 128 characters, not "." or "..").
bool SafeJobId(const std::string& id);

}  // namespace moerun::worker
