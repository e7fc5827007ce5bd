// The parameter tensors of a moerun model (docs/architecture.md §4), named as in Hugging Face's
// DeepSeek-V3 layout so an export loads there. This list is the single source of truth for
// parameter counts (`moerun plan`), allocation, checkpoint keys and export.
// Shapes are [out_features, in_features] for linear weights, as Hugging Face stores them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/job_spec.h"

namespace moerun {

enum class TensorRole {
  kEmbedding,     // model.embed_tokens.weight
  kNorm,          // RMSNorm scales
  kAttention,     // q/k/v/o projections and MLA's low-rank projections
  kDenseMlp,      // the SwiGLU MLP of a dense layer
  kRouter,        // mlp.gate.weight
  kRouterBias,    // mlp.gate.e_score_correction_bias: balancing bias, not trained by gradients
  kRoutedExpert,  // mlp.experts.{e}.*
  kSharedExpert,  // mlp.shared_experts.*
  kHead,          // lm_head.weight
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t layer = -1;   // -1 outside the decoder layers (embedding, final norm, head)
  int64_t expert = -1;  // routed expert index, -1 otherwise
  TensorRole role = TensorRole::kNorm;

  int64_t numel() const;
  bool trainable() const { return role != TensorRole::kRouterBias; }
  // A 2-D weight that takes weight decay and low-precision GEMMs (norms and biases do not).
  bool is_matrix() const { return shape.size() == 2; }
};

// Every tensor of the model, in a fixed order: embedding, layers 0..n-1, final norm, head.
std::vector<TensorInfo> ModelTensors(const ModelSpec& model);

// Tensors of one decoder layer, in the order ModelTensors lists them.
std::vector<TensorInfo> LayerTensors(const ModelSpec& model, int64_t layer);

struct ParameterCounts {
  int64_t total = 0;             // every tensor, balancing biases included
  int64_t active_per_token = 0;  // total minus the routed experts a token does not use
  int64_t embedding = 0;
  int64_t head = 0;
  int64_t attention = 0;
  int64_t dense_mlp = 0;
  int64_t routed_experts = 0;  // all of them
  int64_t shared_experts = 0;
  int64_t router = 0;  // gate weights and balancing biases
  int64_t norms = 0;
};

ParameterCounts CountParameters(const ModelSpec& model);
// The same from a tensor list already built by ModelTensors(model).
ParameterCounts CountParameters(const ModelSpec& model, const std::vector<TensorInfo>& tensors);

// Parameters of one routed expert (gate, up and down projections).
int64_t RoutedExpertParameters(const ModelSpec& model);

}  // namespace moerun
