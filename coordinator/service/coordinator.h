// Coordinator: the coordinator's logic without its sockets (docs/architecture.md §6, §8). It owns
// the jobs (submit, FIFO queue, placement, rendezvous, per-step reports, completion, cancel,
// restarts), the membership of worker daemons, and their durable state in a
// CoordinatorStore. Messages arrive through Handle() already authenticated and decoded; what
// it sends goes out through the Send callback, addressed by the peer's routing id:
//   worker:<id>                    a daemon
//   trainer:<job>:<gen>:<rank>     a trainer
//   anything else                  a client (the CLI)
// Tick() runs its timers (dead daemons, the progress watchdog, restart backoff, start
// timeouts, the queue); the loop calls it every few tens of milliseconds.
//
// Bad input never crashes it: a body with missing or mistyped fields, a message from the wrong
// kind of peer, or a report of a generation that is over is dropped and counted (counters()),
// and a client gets an Error envelope that says why. Open() reloads every job and daemon from
// the store, so a coordinator killed with SIGKILL goes on where it was: daemons and trainers
// reconnect by themselves and their next messages re-establish the rest.
// Not thread-safe: one loop owns it. Time comes from the injected clock (wall milliseconds,
// since events and restart deadlines outlive the process).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/message_bodies.h"
#include "common/protocol.h"
#include "common/status.h"
#include "common/timeouts.h"
#include "coordinator/membership/worker_registry.h"
#include "coordinator/scheduler/rank_placer.h"
#include "coordinator/service/job_run.h"
#include "coordinator/service/run_roots.h"
#include "coordinator/state/coordinator_store.h"

namespace moerun::coordinator {

struct CoordinatorSettings {
  int64_t heartbeat_interval_ms = 1000;  // told to daemons when they register
  int64_t heartbeat_timeout_ms = 5000;   // a daemon silent this long is dead
  std::string jobs_dir;                  // default parent of a job's run dir
  RunRoots run_roots{};                  // where a submitted job may write
  // A daemon dead this long, holding no rank of an active job, is forgotten; 0: never.
  int64_t forget_dead_workers_ms = kForgetDeadWorkerMs;
  // Each generation's trainers get their own data-plane key pair (CURVE); false: plain sockets,
  // for a trusted fabric (--insecure-data-plane).
  bool data_plane_curve = true;
};

struct CoordinatorCounters {
  uint64_t received = 0;     // envelopes handled
  uint64_t malformed = 0;    // bytes that were not an envelope (counted by the server)
  uint64_t invalid = 0;      // envelopes with a body or sender this coordinator cannot use
  uint64_t stale = 0;        // reports of a generation that is over
  uint64_t sent = 0;         // envelopes sent
  uint64_t unroutable = 0;   // sends to a peer that is not connected
  uint64_t auth_denied = 0;  // clients refused by CURVE (counted by the server)
};

class Coordinator {
 public:
  using Send = std::function<bool(const std::string& peer, const Envelope& e)>;

  // `wall`: milliseconds since the epoch (WallClock); `timer`: monotonic (SystemClock). Both
  // outlive the coordinator.
  static Result<std::unique_ptr<Coordinator>> Open(CoordinatorStore* store, const Clock* wall,
                                                   const Clock* timer, CoordinatorSettings settings,
                                                   Send send);

  void Handle(const std::string& peer, const Envelope& e);
  void Tick();

  CoordinatorCounters& counters() { return counters_; }
  const std::map<std::string, JobRun>& jobs() const { return jobs_; }
  const WorkerRegistry& workers() const { return workers_; }

 private:
  Coordinator(CoordinatorStore* store, const Clock* wall, const Clock* timer,
              CoordinatorSettings settings, Send send);
  Status Load();

  // Messages, by sender kind.
  // route: the routing id it came from, "worker:<id>" or "worker:<id>#<home hash>".
  void OnWorkerMessage(const std::string& worker_id, const std::string& route, const Envelope& e);
  void OnTrainerMessage(const std::string& peer, const Envelope& e);
  void OnClientMessage(const std::string& peer, const Envelope& e);
  // full_state: the list is every trainer the daemon has (a heartbeat), not just news.
  void ReconcileTrainers(const std::string& worker_id, const std::vector<TrainerReport>& trainers,
                         bool full_state, nlohmann::json* acked);
  void OnWorkerStatus(const std::string& worker_id, const std::string& route, const Envelope& e,
                      const WorkerStatusBody& b);
  // Where messages to the daemon go: its registered route.
  std::string WorkerRoute(const std::string& worker_id) const;
  // `moerun worker remove ID`: forgets a dead daemon that holds no rank.
  void RemoveWorker(const std::string& peer, const std::string& worker_id);
  // Forgets it: registry, store, and why (logged).
  void ForgetWorker(const std::string& worker_id, const std::string& why);
  void OnRankExit(JobRun& job, int rank, int exit_code, int signal, const std::string& text);
  void OnRendezvous(const std::string& peer, JobRun& job, int rank, const std::string& endpoint,
                    const std::string& nccl_unique_id);
  nlohmann::json TableBody(const JobRun& job) const;
  void OnStepReport(JobRun& job, const StepReportBody& body);
  // A rank became a straggler or stopped being one (coordinator_stragglers.cc): an event, and
  // with fault_tolerance.evict_stragglers a restart without its daemon when others have room.
  void OnStragglerChange(JobRun& job, const StragglerChange& change);
  // Pre-flight (coordinator_preflight.cc): once every rank has reported, the daemons whose
  // GEMM or links fall short are named, and left out (a restart) when others have room.
  void OnPreflightReport(JobRun& job, const PreflightReportBody& body);
  void JudgePreflight(JobRun& job);
  // Free slots, outside `leaving` and the job's avoided daemons, for `moving` ranks.
  bool RoomElsewhere(const JobRun& job, const std::set<std::string>& leaving) const;
  // `peer` sent it (a repeat of a committed step is answered with the commit).
  void OnShardWritten(const std::string& peer, JobRun& job, const ShardWrittenBody& body);
  // CheckpointCommitted to `peers`: `kept`, the committed steps the job keeps (ascending), which
  // the writer ranks' retention deletes by (worker/checkpoint/checkpoint_writer.h).
  void SendCommitted(const JobRun& job, const std::vector<std::string>& peers,
                     const std::vector<int64_t>& kept);
  std::set<std::string> ExpectedShards(const JobRun& job) const;

  // Client requests.
  void Submit(const std::string& peer, const SubmitJobBody& body);
  void Cancel(const std::string& peer, const std::string& job_id);
  // `moerun stop` (coordinator_stops.cc): SIGTERM to the trainers, which checkpoint the step
  // they are in and exit; the job ends STOPPED once they have (CheckStop) or the grace is over.
  void StopJob(const std::string& peer, const std::string& job_id, const std::string& reason);
  // A stop under way: ends it when every rank has exited and no shard report trails, or when
  // kStopCheckpointGraceMs is over; true when the job ended.
  bool CheckStop(JobRun& job);
  void EndStop(JobRun& job, const std::string& why);
  void Query(const std::string& peer, const Envelope& e);
  void QueryJob(const std::string& peer, const JobRun& job, const QueryBody& q);
  void QueryExpertLoad(const std::string& peer, const JobRun& job, const QueryBody& q);
  nlohmann::json StatusReply() const;
  nlohmann::json LiveReply(const JobRun& job) const;
  void ForwardLogRequest(const std::string& peer, const QueryBody& q);
  // A body that FromJson refused: counted, logged, and answered when a client sent it.
  void Refuse(const std::string& peer, const Envelope& e, const Status& why);
  void OnForwardedReply(const Envelope& e);
  nlohmann::json JobSummary(const JobRun& job) const;
  nlohmann::json JobDetail(const JobRun& job) const;
  nlohmann::json WorkerTable() const;

  // Lifecycle.
  void Schedule();                    // queue heads and due restarts get slots
  bool StartGeneration(JobRun& job);  // places ranks and sends StartTrainers; false: no room
  void SendStart(JobRun& job, const std::string& worker_id);
  // Checkpoints in memory: restore job.memory_step from the ranks' memory snapshots when
  // every rank is placed on the host that holds its snapshot, else say why not and restore
  // from disk (docs/fault-tolerance.md, "Checkpoints in memory").
  void ChooseMemoryRestore(JobRun& job);
  // When ranks moved: restores the newest pinned step, the moved ranks from their copies, if
  // every moved rank's copy is on a host whose rank stayed. False (nothing changed) otherwise.
  bool RestoreFromReplicas(JobRun& job, const std::string& on_disk);
  // No placement for `job` now: remember since when and why, and say so once per new reason
  // (an event, the log; status, the dashboard and Prometheus read it from the job).
  void NoteWaiting(JobRun& job, const PlacementRequest& req);
  void FailJob(JobRun& job, const std::string& cause, int rank, const std::string& host,
               bool non_retryable);
  void StopTrainers(const JobRun& job, uint64_t below_generation, int64_t grace_ms);
  void FinishIfDone(JobRun& job);
  // The job's last step is committed: nothing that happens to its ranks or daemons afterwards
  // can undo the run.
  bool LastStepCommitted(const JobRun& job) const;
  // -> SUCCEEDED (through RUNNING when RECOVERING), fencing every trainer still running.
  // `schedule`: hand the freed slots out now (false when called from Schedule itself).
  void SucceedJob(JobRun& job, const std::string& cause, bool schedule = true);
  // Fails every active job with a rank on the daemon (it died or restarted).
  void FailJobsOn(const std::string& worker_id, const std::string& cause);
  std::map<std::string, int64_t> FreeSlots() const;

  // Hangs (docs/fault-tolerance.md, "Hangs"): the daemons of the job's current generation
  // are asked for their trainers' flight recorders; the answers (or kFlightCollectTimeoutMs)
  // become one event naming the rank that did not arrive and where the others wait.
  void CollectFlightRecords(const JobRun& job);
  void OnFlightReply(const Envelope& e, const std::string& request_id);
  void FinishFlightCollections(bool only_complete);

  void Persist(JobRun& job, bool sync = true);
  bool SendTo(const std::string& peer, MessageType type, const std::string& job_id,
              uint64_t generation, nlohmann::json body);
  void Reply(const std::string& peer, nlohmann::json body);
  // An Error answer; `retryable` when asking again later may succeed (the store failed), so
  // that the CLI exits 1 rather than 2.
  void ReplyError(const std::string& peer, const std::string& why, bool retryable = false);
  void Log(const std::string& line);

  CoordinatorStore* store_;
  // Two timelines. clock_: wall time for what is shown or stored (events, restart deadlines
  // that outlive a coordinator restart, step times). timer_: monotonic time for everything
  // that decides a failure (heartbeats, the progress watchdog, rendezvous and request
  // deadlines), so stepping the wall clock declares nothing dead.
  const Clock* clock_;
  const Clock* timer_;
  CoordinatorSettings settings_;
  Send send_;
  CoordinatorCounters counters_;
  WorkerRegistry workers_;
  std::map<std::string, JobRun> jobs_;
  // Per daemon since this coordinator started (volatile): trainers running at its last
  // heartbeat and trainers that failed on it.
  struct WorkerActivity {
    int64_t trainers = 0;
    int64_t trainer_failures = 0;
  };
  std::map<std::string, WorkerActivity> activity_;
  struct Forwarded {
    std::string client;
    int64_t deadline_ms = 0;
  };
  std::map<std::string, Forwarded> forwarded_;  // request id -> the client waiting
  struct FlightCollection {
    std::string job_id;
    uint64_t generation = 0;
    int world = 0;
    int64_t deadline_ms = 0;
    std::set<std::string> pending;  // workers yet to answer
    nlohmann::json ranks = nlohmann::json::object();
    std::vector<std::string> problems;
  };
  std::map<std::string, FlightCollection> flights_;  // "flight/<job>/<generation>" -> answers
  uint64_t next_request_ = 1;
};

}  // namespace moerun::coordinator
