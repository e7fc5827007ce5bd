// Export of a checkpoint in Hugging Face's layout: model.safetensors (standard header: an
// 8-byte little-endian length, a JSON table of name -> dtype, shape, byte range, then the
// tensors) and config.json in DeepSeek-V3's style. Weights only; optimizer state stays out.
#pragma once

#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/checkpoint/shard_store.h"

namespace moerun::trainer {

// Writes OUT/model.safetensors and OUT/config.json from the "param/" entries of a step. With
// attention: mla the names and config keys are Hugging Face DeepseekV3's; multi-token
// prediction module k is layer n_layers + k - 1 with enorm, hnorm, eh_proj, its block,
// shared_head.norm and copies of the embedding and head (embed_tokens, shared_head.head),
// as the published DeepSeek-V3 checkpoint lays them out.
Status ExportHuggingFace(const JobSpec& spec, const std::vector<checkpoint::Entry>& entries,
                         int64_t step, const std::string& out_dir);

}  // namespace moerun::trainer
