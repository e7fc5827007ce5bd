// What a trainer saves and restores: weights (balancing biases included), both AdamW
// moments, the step, and the seed. Data position and every RNG are functions of (seed,
// step), so the step restores them too. A fingerprint of tensor names and shapes refuses a
// checkpoint of a different model.
#pragma once

#include <cstdint>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/checkpoint/memory_snapshots.h"
#include "worker/checkpoint/shard_store.h"
#include "worker/model/parameters.h"

namespace moerun::trainer {

struct OptimizerState {
  std::vector<float> m, v;  // same layout as Parameters::values()
};

// Names and shapes of every tensor of the whole model: equal for every shard of one job.
uint64_t ModelFingerprint(const ModelSpec& model);

// `model` is the whole model (the snapshot may be one shard of it): its fingerprint and the
// fields that shape it (meta/model.*, common/model_tensors.h) are recorded.
std::vector<checkpoint::Entry> SnapshotState(const model::Parameters<float>& params,
                                             const OptimizerState& opt, int64_t step, uint64_t seed,
                                             const ModelSpec& model);

// The same entries as views into `params` and `opt`, nothing copied: the memory snapshots copy
// them once, straight into their slot (worker/checkpoint/memory_snapshots.h). SnapshotState is
// these, copied.
std::vector<checkpoint::EntryView> StateViews(const model::Parameters<float>& params,
                                              const OptimizerState& opt, int64_t step,
                                              uint64_t seed, const ModelSpec& model);

// Fills params (and opt when non-null) from a checkpoint (entries of one or several shards);
// *step gets its step. Corruption naming the entry when a tensor is missing or has another
// shape; InvalidArgument when the checkpoint is of another model than `model`, naming the
// first recorded field that differs (even where every tensor shape agrees, e.g. n_heads at the
// same d_model); checkpoints written before fields were recorded: by the fingerprint alone.
Status RestoreState(const std::vector<checkpoint::Entry>& entries, model::Parameters<float>* params,
                    OptimizerState* opt, int64_t* step, const ModelSpec& model);

}  // namespace moerun::trainer
