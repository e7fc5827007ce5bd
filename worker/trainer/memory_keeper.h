// MemoryKeeper: a rank's checkpoints in memory, between its steps (docs/fault-tolerance.md,
// "Checkpoints in memory"): every checkpoint.memory_interval_steps a snapshot into its host's
// slots (worker/checkpoint/memory_snapshots.h), and every memory_replica_interval_steps a pinned
// one copied to its partner on another host (worker/trainer/snapshot_replicas.h). A snapshot or
// copy that cannot be kept is logged once and training goes on (the disk checkpoints still hold
// the run); a data-plane failure during a copy is the step's failure, as any collective's.
// The training thread only.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "common/job_spec.h"
#include "worker/checkpoint/memory_snapshots.h"
#include "worker/comm/communicator.h"
#include "worker/trainer/snapshot_replicas.h"
#include "worker/trainer/train_restore.h"
#include "worker/trainer/train_state.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {

class MemoryKeeper {
 public:
  // Null when nothing is kept: no memory directory from a daemon, or memory_interval_steps 0.
  static Result<std::unique_ptr<MemoryKeeper>> Open(const JobSpec& spec, const TrainOptions& opts);

  // Whether step `step` of `total` writes a snapshot or a copy (the host arrays must then hold
  // the step's state). Every rank of a job pins the same steps: the copies pair them all.
  bool Due(int64_t step, int64_t total) const;
  // Keeps what is due at `step` from `state`.
  Status AfterStep(int64_t step, int64_t total, const TrainState& state, comm::Communicator& world,
                   spdlog::logger& log);
  // For the step reports: snapshots held on this host, and pinned steps held with a copy.
  std::pair<int64_t, int64_t> Held() const { return memory_->Held(); }
  std::pair<int64_t, int64_t> ReplicaHeld() const;
  void LogSummary(spdlog::logger& log) const;  // what the snapshots and copies cost

 private:
  MemoryKeeper(const JobSpec& spec, const TrainOptions& opts) : spec_(spec), opts_(opts) {}
  bool SnapshotDue(int64_t step, int64_t total) const;
  bool CopyDue(int64_t step, int64_t total) const;

  const JobSpec& spec_;
  const TrainOptions& opts_;
  std::unique_ptr<checkpoint::MemorySnapshots> memory_;
  std::unique_ptr<SnapshotReplicas> replicas_;  // null unless the daemon named partners
  // The state's views point into arrays that never move: built once (names, shapes, the
  // model's fingerprint), then only meta/step changes.
  std::vector<checkpoint::EntryView> views_;
  checkpoint::EntryView* step_view_ = nullptr;
  bool memory_failed_ = false, replica_failed_ = false;  // said once each
};

}  // namespace moerun::trainer
