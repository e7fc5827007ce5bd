#include "worker/trainer/memory_keeper.h"

#include <algorithm>

namespace moerun::trainer {

Result<std::unique_ptr<MemoryKeeper>> MemoryKeeper::Open(const JobSpec& spec,
                                                         const TrainOptions& opts) {
  if (opts.memory_dir.empty() || spec.checkpoint.memory_interval_steps <= 0)
    return std::unique_ptr<MemoryKeeper>();
  std::unique_ptr<MemoryKeeper> k(new MemoryKeeper(spec, opts));
  auto memory = checkpoint::MemorySnapshots::Open(opts.memory_dir, opts.rank);
  if (!memory.ok()) return memory.status();
  k->memory_ = std::move(memory.value());
  if (opts.replica_to >= 0 && opts.replica_from >= 0 &&
      spec.checkpoint.memory_replica_interval_steps > 0) {
    auto replicas =
        SnapshotReplicas::Open(opts.memory_dir, opts.rank, opts.replica_to, opts.replica_from);
    if (!replicas.ok()) return replicas.status();
    k->replicas_ = std::move(replicas.value());
  }
  return k;
}

bool MemoryKeeper::SnapshotDue(int64_t step, int64_t total) const {
  const int64_t every = spec_.checkpoint.memory_interval_steps;
  return every > 0 && step % every == 0 && step < total;  // the last step: nothing restarts
}

bool MemoryKeeper::CopyDue(int64_t step, int64_t total) const {
  const int64_t every = spec_.checkpoint.memory_replica_interval_steps;
  return replicas_ && every > 0 && step % every == 0 && step < total;
}

bool MemoryKeeper::Due(int64_t step, int64_t total) const {
  return SnapshotDue(step, total) || CopyDue(step, total);
}

Status MemoryKeeper::AfterStep(int64_t step, int64_t total, const TrainState& state,
                               comm::Communicator& world, spdlog::logger& log) {
  if (!Due(step, total)) return Status::OK();
  if (views_.empty()) {
    views_ = StateViews(state.params, state.opt, step, spec_.train.seed, state.model);
    for (auto& v : views_)
      if (v.name == "meta/step") step_view_ = &v;
  }
  if (step_view_) step_view_->scalar = step;
  if (SnapshotDue(step, total)) {
    Status written = memory_->Write(step, views_);
    if (!written.ok() && !memory_failed_) {
      memory_failed_ = true;
      log.error("memory snapshot of step {}: {}", step, written.message());
    }
  }
  if (CopyDue(step, total)) {
    std::string problem;
    Status exchanged = replicas_->Exchange(world, step, views_, &problem);
    if (!exchanged.ok())
      return exchanged.WithContext("copying memory snapshots of step " + std::to_string(step));
    if (!problem.empty() && !replica_failed_) {
      replica_failed_ = true;
      log.error("{}", problem);
    }
  }
  return Status::OK();
}

std::pair<int64_t, int64_t> MemoryKeeper::ReplicaHeld() const {
  return replicas_ ? replicas_->Held() : std::pair<int64_t, int64_t>{0, 0};
}

void MemoryKeeper::LogSummary(spdlog::logger& log) const {
  const int64_t n = std::max<int64_t>(1, memory_->written());
  log.info("memory snapshots: {} written, {:.2f} ms each", memory_->written(),
           1e3 * memory_->write_seconds() / double(n));
  if (replicas_) {
    const int64_t k = std::max<int64_t>(1, replicas_->exchanges());
    log.info("pinned and copied to rank {}: {} steps, {:.2f} ms each", opts_.replica_to,
             replicas_->exchanges(), 1e3 * replicas_->seconds() / double(k));
  }
}

}  // namespace moerun::trainer
