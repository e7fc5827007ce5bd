// WorkerDaemon: the per-host daemon (docs/architecture.md §1, §6). It registers with the
// coordinator, sends a heartbeat every interval that carries its registration and the state of each
// of its trainers, starts one trainer process per assigned rank (TrainerSupervisor), reports every
// trainer exit at once and again in each heartbeat until the coordinator acknowledges it, and stops
// trainers on command or when their generation is over (a new generation of a job starts only after
// the old one's trainers on this host are gone). It serves the trainers' logs to the coordinator in
// chunks.
//
// The coordinator may vanish and come back (restart, network): the DEALER reconnects with
// backoff, heartbeats go on, and the daemon never exits because of it. Its trainers keep
// training for as long as the coordinator's heartbeat timeout (the lease): after that the
// coordinator has declared this daemon dead and restarted its ranks elsewhere, so the daemon
// stops them itself (it cannot tell a coordinator restart from a network partition). Files under
// state_dir:
//   jobs/<job>/gen-<G>.yaml         the spec its trainers of generation G read
//   logs/<job>/rank-<R>.log         each trainer's stdout and stderr, all generations
//   worker.log                      the daemon's own log
// Run() owns everything on the calling thread; the stop flag may be set from a signal.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>
#include <zmq.hpp>

#include "common/control_socket.h"
#include "common/status.h"
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
};

class WorkerDaemon {
 public:
  static Result<std::unique_ptr<WorkerDaemon>> Create(DaemonOptions opts);
  ~WorkerDaemon();

  // Until `stop`; then stops every trainer (SIGTERM, SIGKILL after the grace period).
  void Run(const std::atomic<bool>& stop);

 private:
  using TrainerKey = std::tuple<std::string, uint64_t, int>;  // job, generation, rank
  struct TrainerState {
    int64_t pid = 0;
    bool running = true;
    int exit_code = -1;
    int signal = 0;
    std::string text;
    int device = -1;  // the device slot it holds while running
  };
  struct PendingStart {
    std::string job_id;
    uint64_t generation = 0;
    nlohmann::json body;
  };

  explicit WorkerDaemon(DaemonOptions opts);
  void Send(MessageType type, const std::string& job_id, uint64_t generation, nlohmann::json body);
  nlohmann::json Registration() const;
  void SendHeartbeat(MessageType type);
  void OnMessage(const Envelope& e);
  void OnStart(const Envelope& e);
  void OnStop(const Envelope& e);
  void OnLogQuery(const Envelope& e);
  void OnAcked(const nlohmann::json& acked);
  void StartPending();
  // device: the rank's slot on this host, its CUDA device for backend: cuda (-1: none free).
  Status StartRank(const PendingStart& p, int rank, int device);
  // The lowest device slot no running trainer (of any job) holds, or -1.
  int FreeDevice() const;
  std::string LogPath(const std::string& job_id, int rank) const;

  DaemonOptions opts_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> dealer_;
  TrainerSupervisor supervisor_;
  std::map<TrainerKey, TrainerState> trainers_;  // running, or exited and not yet acked
  std::set<TrainerKey> started_;                 // ever started: a repeated start is ignored
  std::vector<PendingStart> pending_;            // waiting for an older generation to stop
  std::vector<TrainerKey> new_exits_;            // to report right away
  int64_t heartbeat_interval_ms_ = 1000;
  int64_t seq_ = 0;
  int64_t last_answer_ms_ = 0;  // steady ms of the coordinator's last message
  bool coordinator_away_ = false;
  bool registered_ = false;  // a Registered answer came (after that: Heartbeat, not Register)
  int64_t lease_ms_ = 0;     // the coordinator's heartbeat timeout: silent longer, self-fence
  bool self_fenced_ = false;
};

}  // namespace moerun::worker
