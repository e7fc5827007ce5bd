#include "worker/trainer/train_restore.h"

#include <filesystem>

#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/memory_snapshots.h"
#include "worker/trainer/snapshot_replicas.h"

namespace moerun::trainer {
namespace {

namespace fs = std::filesystem;

// The coordinator's newest committed step, and no other: if it cannot be read, the
// coordinator drops it and restarts everyone from the one before. Only this rank's shard is
// read (it holds every tensor the rank has), which keeps a restart fast.
Status RestoreCommitted(const std::string& shard, int64_t restore_step,
                        checkpoint::ShardStore* store, TrainState* state) {
  std::unique_ptr<checkpoint::ShardStore> reader;
  if (store == nullptr) {
    auto r = checkpoint::ShardStore::Open(shard, false);
    if (!r.ok()) return r.status();
    reader = std::move(r.value());
    store = reader.get();
  }
  auto entries = store->ReadStep(restore_step);
  if (!entries.ok()) return entries.status();
  return RestoreState(entries.value(), &state->params, &state->opt, &state->step, state->model);
}

// --resume: the newest step every shard holds and verifies, refused steps logged and
// skipped. Without --resume, existing checkpoints are an error: they would be overwritten.
Status ResumeNewest(const JobSpec& spec, const std::string& ckpt_dir, bool resume,
                    TrainState* state, spdlog::logger& log) {
  auto run = checkpoint::RunCheckpoints::Open(ckpt_dir);
  auto steps =
      run.ok() ? run->CompleteSteps() : Result<std::vector<int64_t>>(std::vector<int64_t>{});
  if (!steps.ok())
    return Status::IOError("checkpoints in " + ckpt_dir + ": " + steps.status().ToString());
  if (!resume && !steps->empty()) {
    return Status::InvalidArgument(
        ckpt_dir + " already holds checkpoints up to step " + std::to_string(steps->back()) +
        ": continue that run with --resume, or train into a new --run-dir");
  }
  for (auto it = steps->rbegin(); resume && it != steps->rend(); ++it) {
    auto entries = run->ReadStep(*it);
    Status s = entries.ok() ? RestoreState(entries.value(), &state->params, &state->opt,
                                           &state->step, state->model)
                            : entries.status();
    if (s.ok()) {
      log.info("resumed from checkpoint step {}", state->step);
      return Status::OK();
    }
    // Another model's checkpoints: older steps are that model's too, and starting afresh
    // would write this model's steps among them. Nothing has started; stop here.
    if (s.code() == Status::Code::kInvalidArgument) {
      return Status::InvalidArgument("checkpoints in " + ckpt_dir + ": " + s.message() +
                                     "; train into a new --run-dir, or resume with the model "
                                     "the run was trained with");
    }
    log.error("checkpoint step {} refused: {}; trying the previous one", *it, s.message());
    state->params.Initialize(spec.train.seed, spec.model.init_std);  // undo a partial restore
    state->step = 0;
  }
  return Status::OK();
}

}  // namespace

TrainState::TrainState(const JobSpec& spec, const model::StageRange& range, bool initialize)
    : params(model::StageTensors(spec.model, range)),
      opt{std::vector<float>(params.values().size(), 0.0f),
          std::vector<float>(params.values().size(), 0.0f)},
      model(spec.model) {
  if (initialize) params.Initialize(spec.train.seed, spec.model.init_std);
}

Result<std::unique_ptr<checkpoint::ShardStore>> OpenShardStore(const JobSpec& spec,
                                                               const TrainOptions& opts,
                                                               const Topology& topo) {
  if (!topo.writes_checkpoint()) return std::unique_ptr<checkpoint::ShardStore>();
  const std::string shard = CheckpointDir(spec, opts.run_dir) + "/" + topo.ShardName();
  std::error_code ec;
  fs::create_directories(shard, ec);
  if (ec) {
    return Status::DataLoss("checkpoint shard " + shard + " cannot be created (" + ec.message() +
                            "): fix the directory's permissions or attributes");
  }
  auto store = checkpoint::ShardStore::Open(shard, true);
  // DataLoss (not writable: exit 3, never retried) and Corruption (damaged beyond opening:
  // exit 5, the coordinator falls back) pass as they are; anything else is retried.
  if (!store.ok() && store.status().code() != Status::Code::kDataLoss &&
      store.status().code() != Status::Code::kCorruption)
    return Status::IOError("checkpoint shard " + shard + ": " + store.status().ToString());
  return store;
}

Status RestoreOrResume(const JobSpec& spec, const TrainOptions& opts, const Topology& topo,
                       checkpoint::ShardStore* store, TrainState* state, spdlog::logger& log) {
  const std::string ckpt_dir = CheckpointDir(spec, opts.run_dir);
  MOERUN_RETURN_IF_ERROR(topo.world_comm->Barrier());
  if (opts.restore_step > 0 && opts.restore_from_memory) {
    // The coordinator found this step in every rank's memory on the hosts it placed them on
    // (its own slots, or kept aside pinned), or, for a rank whose host was lost, in the copy
    // another rank keeps (SnapshotReplicas).
    const int64_t step = opts.restore_step;
    auto entries = [&]() -> Result<std::vector<checkpoint::Entry>> {
      if (opts.fetch_replica_from >= 0)
        return SnapshotReplicas::Fetch(*topo.world_comm, opts.fetch_replica_from, opts.rank, step);
      auto own = checkpoint::MemorySnapshots::Read(opts.memory_dir, opts.rank, step);
      if (own.ok()) return own;
      auto pinned = checkpoint::MemorySnapshots::Read(opts.memory_dir, opts.rank, step,
                                                      checkpoint::SnapshotKind::kPinned);
      return pinned.ok() ? std::move(pinned) : std::move(own);
    }();
    for (int rank : opts.serve_replicas) {
      MOERUN_RETURN_IF_ERROR(
          SnapshotReplicas::Serve(*topo.world_comm, opts.memory_dir, rank, step));
    }
    Status s = entries.ok() ? RestoreState(entries.value(), &state->params, &state->opt,
                                           &state->step, state->model)
                            : entries.status();
    if (!s.ok()) {
      return Status::Corruption("memory snapshot of committed step " +
                                std::to_string(opts.restore_step) +
                                " is unreadable: " + s.message());
    }
    if (opts.fetch_replica_from >= 0) {
      log.info("restored step {} from memory: the copy rank {} keeps", state->step,
               opts.fetch_replica_from);
    } else {
      log.info("restored step {} from memory ({})", state->step, opts.memory_dir);
    }
  } else if (opts.restore_step > 0) {
    Status s = RestoreCommitted(ckpt_dir + "/" + topo.ShardName(), opts.restore_step, store, state);
    // Another model's step is not unreadable: falling back to an older one cannot help.
    if (s.code() == Status::Code::kInvalidArgument) {
      return Status::InvalidArgument("committed checkpoint step " +
                                     std::to_string(opts.restore_step) + " in " + ckpt_dir + ": " +
                                     s.message());
    }
    if (!s.ok()) {
      return Status::Corruption(
          "committed checkpoint step " + std::to_string(opts.restore_step) + " is unreadable: " +
          s.message() + (store && !store->damage().empty() ? " (" + store->damage() + ")" : ""));
    }
    log.info("restored committed checkpoint step {} from {}", state->step, topo.ShardName());
  } else if (fs::exists(ckpt_dir)) {
    MOERUN_RETURN_IF_ERROR(ResumeNewest(spec, ckpt_dir, opts.resume, state, log));
  }
  MOERUN_RETURN_IF_ERROR(topo.world_comm->Barrier());  // nobody writes before all have read
  if (store) MOERUN_RETURN_IF_ERROR(store->AllowCompaction());
  return Status::OK();
}

}  // namespace moerun::trainer
