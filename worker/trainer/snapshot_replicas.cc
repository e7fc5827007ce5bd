#include "worker/trainer/snapshot_replicas.h"

#include <algorithm>
#include <chrono>

#include "common/limits.h"

namespace moerun::trainer {

Result<std::unique_ptr<SnapshotReplicas>> SnapshotReplicas::Open(const std::string& dir, int rank,
                                                                 int to, int from) {
  std::unique_ptr<SnapshotReplicas> r(new SnapshotReplicas());
  r->to_ = to;
  r->from_ = from;
  auto pinned = checkpoint::MemorySnapshots::Open(dir, rank, checkpoint::SnapshotKind::kPinned);
  if (!pinned.ok()) return pinned.status();
  auto replica = checkpoint::MemorySnapshots::Open(dir, from, checkpoint::SnapshotKind::kReplica);
  if (!replica.ok()) return replica.status();
  r->pinned_ = std::move(pinned.value());
  r->replica_ = std::move(replica.value());
  return r;
}

Status SnapshotReplicas::Exchange(comm::Communicator& world, int64_t step,
                                  const std::vector<checkpoint::EntryView>& entries,
                                  std::string* problem) {
  const auto t0 = std::chrono::steady_clock::now();
  Status written = pinned_->Write(step, entries);
  if (!written.ok())
    *problem = "pinned snapshot of step " + std::to_string(step) + ": " + written.message();
  const std::string_view image = written.ok() ? pinned_->Image(step) : std::string_view();
  uint64_t mine = image.size(), theirs = 0;
  MOERUN_RETURN_IF_ERROR(world.SendRecv(to_, kReplicaSizeTag, &mine, sizeof mine, from_,
                                        kReplicaSizeTag, &theirs, sizeof theirs));
  if (theirs > kMaxMemorySnapshotBytes) {
    return Status::InvalidArgument("rank " + std::to_string(from_) + " announced a " +
                                   std::to_string(theirs) + "-byte snapshot copy, over " +
                                   std::to_string(kMaxMemorySnapshotBytes));
  }
  received_.resize(theirs);
  MOERUN_RETURN_IF_ERROR(world.SendRecv(to_, kReplicaImageTag, image.data(), mine, from_,
                                        kReplicaImageTag, received_.data(), theirs));
  if (theirs > 0) {
    Status kept = replica_->Store(step, received_);
    if (!kept.ok() && problem->empty())
      *problem = "copy of rank " + std::to_string(from_) + "'s step " + std::to_string(step) +
                 ": " + kept.message();
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++exchanges_;
  return Status::OK();
}

std::pair<int64_t, int64_t> SnapshotReplicas::Held() const {
  const auto [p_old, p_new] = pinned_->Held();
  const auto [r_old, r_new] = replica_->Held();
  const int64_t oldest = std::max(p_old, r_old), newest = std::min(p_new, r_new);
  if (p_new <= 0 || r_new <= 0 || newest < oldest) return {0, 0};
  return {oldest, newest};
}

Status SnapshotReplicas::Serve(comm::Communicator& world, const std::string& dir, int rank,
                               int64_t step) {
  auto image =
      checkpoint::MemorySnapshots::ReadImage(dir, rank, step, checkpoint::SnapshotKind::kReplica);
  // None to give: an empty image, so the fetching rank fails by name instead of waiting.
  const std::string bytes = image.ok() ? std::move(image.value()) : std::string();
  const uint64_t n = bytes.size();
  MOERUN_RETURN_IF_ERROR(world.Send(rank, kReplicaSizeTag, &n, sizeof n));
  return world.Send(rank, kReplicaImageTag, bytes.data(), n);
}

Result<std::vector<checkpoint::Entry>> SnapshotReplicas::Fetch(comm::Communicator& world,
                                                               int holder, int rank, int64_t step) {
  uint64_t n = 0;
  MOERUN_RETURN_IF_ERROR(world.Recv(holder, kReplicaSizeTag, &n, sizeof n));
  if (n > kMaxMemorySnapshotBytes) {
    return Status::Corruption("rank " + std::to_string(holder) + " announced a " +
                              std::to_string(n) + "-byte copy of step " + std::to_string(step));
  }
  std::string image(n, '\0');
  MOERUN_RETURN_IF_ERROR(world.Recv(holder, kReplicaImageTag, image.data(), n));
  if (n == 0) {
    return Status::Corruption("rank " + std::to_string(holder) + " holds no copy of step " +
                              std::to_string(step) + " of rank " + std::to_string(rank));
  }
  return checkpoint::MemorySnapshots::ParseImage(
      image, rank, step, "the copy of rank " + std::to_string(holder) + " holds");
}

}  // namespace moerun::trainer
