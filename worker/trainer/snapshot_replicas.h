// SnapshotReplicas: a rank's pinned memory snapshots and the copies it keeps of its partner's
// (checkpoint.memory_replica_interval_steps; docs/fault-tolerance.md, "Checkpoints in memory").
//
// Every interval each rank of the job, at the same step, writes its state into a pinned slot
// on its host (worker/checkpoint/memory_snapshots.h, kPinned) and, over the world
// communicator, sends that slot's image to the rank that keeps its copies (`to`, on another
// host: coordinator/scheduler/replica_partners.h) while receiving the image of the rank it
// keeps copies for (`from`), which it stores in a replica slot (kReplica). The partners form a
// permutation, so the exchange is one paired send and receive per rank (sizes first: stages
// differ). A rank whose write failed sends an empty image, so its partner never waits for
// bytes that will not come; the step then counts as not replicated for it.
//
// On a restore from memory, a rank whose host was lost fetches its state from the rank that
// kept its copy (Fetch), which sends it (Serve) after reading its own state.
// One per rank; the training thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/checkpoint/memory_snapshots.h"
#include "worker/comm/communicator.h"

namespace moerun::trainer {

// Tags of the exchange on the world communicator, apart from the pipeline's and evaluation's
// (worker/trainer/pipeline_schedule.h).
inline constexpr uint32_t kReplicaSizeTag = 1u << 25;
inline constexpr uint32_t kReplicaImageTag = kReplicaSizeTag + 1;

class SnapshotReplicas {
 public:
  // `dir`: this host's memory directory for the job. `to` and `from` are ranks (not this one).
  static Result<std::unique_ptr<SnapshotReplicas>> Open(const std::string& dir, int rank, int to,
                                                        int from);

  // Pins `entries` as `step` and exchanges images with the partners. A local write or a
  // received image that cannot be kept is logged by the caller from the returned `problem`
  // and training goes on; a data-plane failure is the error (as any collective's).
  Status Exchange(comm::Communicator& world, int64_t step,
                  const std::vector<checkpoint::EntryView>& entries, std::string* problem);
  // Steps this rank holds pinned and whose partner's copy it also holds, oldest and newest
  // ({0, 0}: none). With every rank's report, the coordinator knows which step each rank holds
  // pinned on its host and has a copy of on another.
  std::pair<int64_t, int64_t> Held() const;
  double seconds() const { return seconds_; }
  int64_t exchanges() const { return exchanges_; }

  // Restore: sends `rank`'s copy of `step`, kept on this host in `dir`, to `rank`.
  static Status Serve(comm::Communicator& world, const std::string& dir, int rank, int64_t step);
  // Restore: this rank's state of `step` from the copy `holder` keeps. Corruption (the
  // restore falls back to disk) when the holder has none or what arrives is not whole.
  static Result<std::vector<checkpoint::Entry>> Fetch(comm::Communicator& world, int holder,
                                                      int rank, int64_t step);

 private:
  SnapshotReplicas() = default;

  int to_ = -1, from_ = -1;
  std::unique_ptr<checkpoint::MemorySnapshots> pinned_, replica_;
  std::string received_;  // the partner's image, reused between exchanges
  double seconds_ = 0;
  int64_t exchanges_ = 0;
};

}  // namespace moerun::trainer
