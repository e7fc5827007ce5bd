// Trainer: one rank of a job. Alone (world 1) it trains the whole model, running
// data × micro_batches micro-batches per step so the numbers match a parallel run; in a
// parallel run (world = pipeline × data) it trains its stage and experts with the others
// (worker/trainer/step_driver.h has the step).
//
// Rank 0 writes <run dir>/metrics.jsonl (one JSON object per step) and train.log; other
// ranks log to train-rank-R.log. Ranks of the first expert group write checkpoint shards
// stage-S/dp-D under checkpoint.dir (default <run dir>/checkpoints). Not thread-safe; one
// per process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/exit_codes.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "common/timeouts.h"
#include "worker/trainer/control_channel.h"

namespace moerun::trainer {

struct TrainOptions {
  std::string run_dir;
  int64_t steps = 0;     // > 0 replaces train.steps (and the schedule's length)
  bool resume = false;   // continue from the newest readable checkpoint, if any
  bool progress = true;  // a progress bar when stderr is a terminal
  // A parallel run: this process is `rank` of `world` (= pipeline x data); rank r's data
  // plane listens at endpoints[r]. world 1 trains alone without sockets.
  int rank = 0;
  int world = 1;
  std::vector<std::string> endpoints;
  int64_t data_plane_timeout_ms = kDataPlaneTimeoutMs;
  // Started by a worker daemon: the rendezvous and per-step reports go through the
  // coordinator, and the data plane binds a free port on data_host. Not owned.
  ControlChannel* control = nullptr;
  // > 0: restore exactly this (committed) step, and fail with kExitBadCheckpoint if it cannot
  // be read. -1: with resume, the newest readable step on disk.
  int64_t restore_step = -1;
  std::string data_host = "127.0.0.1";
  // resources.backend: cuda: this rank's CUDA device (its slot on the worker); -1: rank mod
  // the visible devices.
  int device = -1;
  // Non-empty: record every data-plane call in a FlightRecorder file here
  // (worker/comm/flight_recorder.h).
  std::string flight_recorder;
  // The generation's data-plane key pair (public, then secret, one per line), written 0600 by
  // the daemon; read and removed at start. Empty: plain data-plane sockets.
  std::string data_plane_key_file;
  // > 0: at the start of this step the main thread stops for good while the process and its
  // other threads live on: a hang for drills and tests (MOERUN_FAULT_STALL, see
  // docs/fault-tolerance.md, "Hangs").
  int64_t injected_stall_step = 0;
  // > 0: every step this rank computes this many milliseconds longer (it sleeps inside the
  // step's compute): a straggler for drills and tests (MOERUN_FAULT_SLOW, docs/cluster.md).
  int64_t injected_slow_ms = 0;
  // Run the pre-flight before training and report it to the coordinator (worker/trainer/
  // preflight.h): set for the first generation of a daemon-started job with
  // fault_tolerance.preflight on. injected_gemm_ms slows its GEMM (MOERUN_FAULT_SLOW's gemm_ms).
  bool preflight = false;
  int64_t injected_gemm_ms = 0;
  // Set by a worker daemon: its memory directory for this job (tmpfs), where this rank keeps
  // memory snapshots every checkpoint.memory_interval_steps; with restore_from_memory,
  // restore_step is read from there instead of the checkpoint shard.
  std::string memory_dir;
  bool restore_from_memory = false;
  // Replicas of pinned memory snapshots (checkpoint.memory_replica_interval_steps), set by a
  // daemon: the rank this one sends its pinned snapshots to and the one it keeps copies for
  // (-1: none); on a restore from memory, the rank whose copy of this rank's state it fetches
  // (-1: it reads its own host's), and the ranks it sends their copies to.
  int replica_to = -1, replica_from = -1;
  int fetch_replica_from = -1;
  std::vector<int> serve_replicas;
};

struct TrainSummary {
  int64_t first_step = 0;  // 1-based first step this run trained
  int64_t last_step = 0;
  double final_loss = 0;
  double final_val_loss = -1;  // -1: no evaluation ran
  double tokens_per_s = 0;
};

// Trains; the error names what failed (spec, data, checkpoint) and *exit_code gets the
// process exit code for it (ExitCodeFor in common/exit_codes.h: 130 when SIGINT/SIGTERM
// stopped it, Cancelled).
// `spec_yaml` is saved as <run dir>/job.yaml so eval, export and digest can rebuild the
// model from the run dir.
Result<TrainSummary> Train(const JobSpec& spec, const std::string& spec_yaml,
                           const TrainOptions& opts, int* exit_code);

// The checkpoint directory of a run: checkpoint.dir or <run dir>/checkpoints.
std::string CheckpointDir(const JobSpec& spec, const std::string& run_dir);

// The newest step in <run dir>/metrics.jsonl (0 when there is none yet): how far a run is,
// as rank 0 wrote it (a restore rewrites the file back to the restored step).
int64_t LastMetricsStep(const std::string& run_dir);

// Learning rate at 1-based `step`: linear warm-up to lr, then cosine to min_lr.
double LearningRate(const OptimizerSpec& o, int64_t step, int64_t total_steps);

}  // namespace moerun::trainer
