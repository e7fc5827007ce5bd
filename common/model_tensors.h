// The parameter tensors of a moerun model (docs/architecture.md §4), named as in Hugging Face's
// DeepSeek-V3 layout so an export loads there. This list is the single source of truth for
// parameter counts (`moerun plan`), allocation, checkpoint keys and export.
// Multi-token prediction module k (1-based, model.mtp.depth of them) is layer n_layers + k - 1,
// as in the published DeepSeek-V3 checkpoint: enorm, hnorm, eh_proj, one decoder block and
// shared_head.norm; the embedding and the head it shares with the main model are not listed
// again (moerun export writes the copies the checkpoint layout has).
// Shapes are [out_features, in_features] for linear weights, as Hugging Face stores them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/job_spec.h"

namespace moerun {

enum class TensorRole {
  kEmbedding,      // model.embed_tokens.weight
  kNorm,           // RMSNorm scales
  kAttention,      // q/k/v/o projections and MLA's low-rank projections
  kDenseMlp,       // the SwiGLU MLP of a dense layer
  kRouter,         // mlp.gate.weight
  kRouterBias,     // mlp.gate.e_score_correction_bias: balancing bias, not trained by gradients
  kRoutedExpert,   // mlp.experts.{e}.*
  kSharedExpert,   // mlp.shared_experts.*
  kHead,           // lm_head.weight
  kMtpProjection,  // model.layers.{n_layers + k - 1}.eh_proj.weight: [enorm(emb); hnorm(h)] -> d
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t layer = -1;   // -1 outside the decoder layers (embedding, final norm, head)
  int64_t expert = -1;  // routed expert index, -1 otherwise
  TensorRole role = TensorRole::kNorm;
  int64_t mtp_module = 0;  // k (1-based) for a multi-token prediction module's tensors, else 0

  int64_t numel() const;
  bool trainable() const { return role != TensorRole::kRouterBias; }
  // A 2-D weight that takes weight decay and low-precision GEMMs (norms and biases do not).
  bool is_matrix() const { return shape.size() == 2; }
};

// Every tensor of the model, in a fixed order: embedding, layers 0..n-1, MTP modules 1..depth,
// final norm, head.
std::vector<TensorInfo> ModelTensors(const ModelSpec& model);

// Tensors of one decoder layer, in the order ModelTensors lists them.
std::vector<TensorInfo> LayerTensors(const ModelSpec& model, int64_t layer);

// Tensors of multi-token prediction module k (1-based), in the order ModelTensors lists them.
std::vector<TensorInfo> MtpModuleTensors(const ModelSpec& model, int64_t k);

// Whether a pipeline stage holding decoder layers [layer_begin, layer_end), the embedding
// and/or the head holds `t`: the MTP modules live with the head, which also keeps a copy of
// the embedding they share (docs/architecture.md §5).
bool StageHolds(const ModelSpec& model, const TensorInfo& t, int64_t layer_begin, int64_t layer_end,
                bool has_embedding, bool has_head);

// The main model's parameters; the multi-token prediction modules (training only, and not
// part of the published 671B) are counted apart.
struct ParameterCounts {
  int64_t total = 0;             // every main-model tensor, balancing biases included
  int64_t active_per_token = 0;  // total minus the routed experts a token does not use
  int64_t embedding = 0;
  int64_t head = 0;
  int64_t attention = 0;
  int64_t dense_mlp = 0;
  int64_t routed_experts = 0;  // all of them
  int64_t shared_experts = 0;
  int64_t router = 0;  // gate weights and balancing biases
  int64_t norms = 0;
  int64_t mtp = 0;                   // every MTP module's own tensors
  int64_t mtp_active_per_token = 0;  // mtp minus the routed experts a token does not use
};

ParameterCounts CountParameters(const ModelSpec& model);
// The same from a tensor list already built by ModelTensors(model).
ParameterCounts CountParameters(const ModelSpec& model, const std::vector<TensorInfo>& tensors);

// The fields of a model spec that decide its tensors' names and shapes, as (field path,
// value), attention as 0 (mha) or 1 (mla): what a checkpoint records beside its weights, so
// a restore into another model can name the field that differs.
struct ModelShapeField {
  std::string field;  // "model.attention", "model.moe.routed_experts", ...
  int64_t value = 0;
};
std::vector<ModelShapeField> ModelShapeFields(const ModelSpec& model);
// A field's value as a spec writes it ("mla" for model.attention 1).
std::string ModelShapeText(const std::string& field, int64_t value);

// Parameters of one routed expert (gate, up and down projections).
int64_t RoutedExpertParameters(const ModelSpec& model);

}  // namespace moerun
