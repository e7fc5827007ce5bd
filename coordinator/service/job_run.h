// JobRun: everything the coordinator knows about one job (docs/architecture.md §6, §8): its state
// machine, its spec, where its ranks run in the current generation, the generation's
// rendezvous table, each rank's exit and the latest progress. The durable part is stored as
// run/<id> (versioned JSON) next to job/<id> and spec/<id>; the rest is rebuilt from the
// daemons' heartbeats and the trainers' messages after a coordinator restart.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/message_bodies.h"
#include "common/status.h"
#include "coordinator/jobs/job_state.h"
#include "coordinator/jobs/straggler_detector.h"

namespace moerun::coordinator {

inline constexpr int kJobRunRecordVersion = 1;

struct RankRun {
  std::string worker;     // daemon id running this rank in the current generation
  int64_t pid = 0;        // as its daemon reported it; 0 until then
  bool running = false;   // seen running in a heartbeat
  bool exited = false;    // its daemon reported the exit
  int exit_code = -1;     // when it exited normally
  int signal = 0;         // when a signal killed it
  std::string exit_text;  // "exited with code 1" / "killed by signal 9 (Killed)"
  std::string endpoint;   // its data-plane endpoint at the rendezvous (volatile)
  std::string peer;       // the trainer's routing id waiting for the table (volatile)
  int64_t step = 0;       // last finished step it reported (volatile)
  // That step's wall time split, seconds (volatile): compute, data-plane wait (collectives
  // and sends) and pipeline bubble (waiting on a neighbouring stage).
  double compute_s = 0, data_wait_s = 0, bubble_s = 0;
  // The memory snapshots it holds on its host, oldest and newest step (volatile; 0: none).
  int64_t memory_oldest = 0, memory_newest = 0;
  // Its pinned snapshots, each also copied to its partner's host, oldest and newest step
  // (volatile; 0: none).
  int64_t replica_oldest = 0, replica_newest = 0;
};

struct JobRun {
  JobRun(JobState s, JobSpec sp, std::string yaml)
      : state(std::move(s)), spec(std::move(sp)), spec_yaml(std::move(yaml)) {}

  JobState state;
  JobSpec spec;
  std::string spec_yaml;
  int64_t sequence = 0;  // submission order: the queue is FIFO by it
  std::string run_dir;   // where trainers write metrics, logs and checkpoints
  std::string spec_dir;  // relative data.paths resolve against it (the submitter's directory)
  int64_t steps_override = 0;
  bool resume = false;  // generation 1 continues from checkpoints already in run_dir
  int64_t submitted_ms = 0;

  std::vector<RankRun> ranks;       // one per rank once placed; empty while QUEUED
  std::vector<std::string> table;   // the current generation's rendezvous, once complete
  uint64_t started_generation = 0;  // the generation StartTrainers went out for
  std::string nccl_unique_id;       // rank 0's, for CUDA jobs; empty on the CPU backend
  // The data-plane key pair of generation data_plane_generation (Z85; stored, so a rank that
  // starts late after a coordinator restart joins its generation's peers).
  std::string data_plane_public, data_plane_secret;
  uint64_t data_plane_generation = 0;
  // The step this generation restores (-1: the newest complete one on disk; used while the
  // job has no committed step) and the newest step committed so far (0: none).
  int64_t restore_step = -1;
  int64_t committed_step = 0;
  int64_t lost_steps = 0;  // steps trained and then redone after restarts, in all
  // Checkpoints in memory: the newest step every rank of the failed generation held in memory
  // on its host, and those hosts by rank (volatile: a restarted coordinator restores from
  // disk); whether this generation restores restore_step from memory (stored).
  int64_t memory_step = 0;
  std::vector<std::string> memory_workers;
  bool restore_from_memory = false;
  // Replicas of pinned snapshots (coordinator/scheduler/replica_partners.h): this generation's
  // partners (replica_to[r]: the rank keeping r's copies; -1: none) and the ranks that fetch
  // their restore step from their copy's holder (replica_fetch[r]: that rank; -1: none), both
  // stored; from the failed generation, the newest step every rank held pinned and copied,
  // and who holds each rank's copy (volatile, like memory_step).
  std::vector<int> replica_to, replica_fetch;
  int64_t replica_step = 0;
  std::vector<int> replica_holders;
  int64_t generation_started_ms = 0;
  // Rank 0's latest step report. Durable as the newest metric/<id>/<step> record, which a
  // restarted coordinator reads back; the run record's copy is only as new as its last write.
  nlohmann::json progress = nlohmann::json::object();
  // Rank 0's newest tokens per expert, by MoE layer (volatile; stored per step beside the
  // report), and the layers' names (also in every stored report, "expert_layers").
  std::map<std::string, std::vector<int64_t>> expert_load;
  std::vector<std::string> expert_layers;
  // The newest held-out evaluation {"step", "val_loss"}: most step reports carry none.
  nlohmann::json held_out = nlohmann::json::object();
  int64_t first_step_ms = 0;  // wall time of the first step report of this generation
  int64_t first_step = 0;     // the step of that report

  // Volatile bookkeeping of the coordinator's loop, on its monotonic timer (never stored: a
  // reloaded job starts its timers afresh).
  std::map<std::string, int64_t> start_sent_ms;  // daemon -> last StartTrainers
  int64_t generation_started_timer_ms = 0;       // the rendezvous deadline counts from here
  // Two-phase commit: shards reported written, per step, until every shard of the step is in.
  std::map<int64_t, std::map<std::string, int64_t>> shards_written;  // step -> shard -> bytes
  int64_t last_progress_ms = 0;  // any rank finished a step (the progress watchdog)
  // No room to start (a QUEUED head or a due restart): since when, on the timer (0: not
  // waiting), and what for ("3 of 4 slots free: worker local-1 DEAD").
  int64_t waiting_since_ms = 0;
  std::string waiting_for;
  // `moerun stop`: asked on the timer at (0: not stopping), why, the committed step then, and
  // when the last rank's exit came (0: not yet). A restarted coordinator forgets a stop under
  // way; its asker (`moerun slurm`) asks again.
  int64_t stop_asked_ms = 0;
  std::string stop_reason;
  int64_t stop_committed_before = 0;
  int64_t stop_exited_ms = 0;
  // Stragglers of the current generation (volatile: made at its start, or at the first step
  // report a restarted coordinator sees), and the daemons an evicted straggler ran on, which
  // this job's restarts avoid (volatile).
  std::optional<StragglerDetector> stragglers;
  std::set<std::string> avoided_workers;
  // The current generation's pre-flight reports by rank, until judged (volatile).
  std::map<int, PreflightReportBody> preflight;
  bool preflight_judged = false;

  int64_t world() const { return spec.parallel.world_size(); }
  int64_t total_steps() const { return steps_override > 0 ? steps_override : spec.train.steps; }
  bool placed() const { return !ranks.empty(); }
  // The newest step every rank now holds in memory (from their step reports); 0: none.
  int64_t MemoryCommitted() const;
  // The newest step every rank holds pinned with its copy on its partner's host; 0: none.
  int64_t ReplicaCommitted() const;

  nlohmann::json ToRecord() const;  // the run/<id> document
  // Restores the durable part; state, spec and spec_yaml are set by the caller.
  Status FromRecord(const nlohmann::json& j);
};

}  // namespace moerun::coordinator
