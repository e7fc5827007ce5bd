// The MoE router of DeepSeek-V3 (docs/architecture.md §4) on the CPU, forward and backward.
//   logits [N, E] = x Wgᵀ (a Linear, done by the caller)
//   scores [N, E] = sigmoid(logits) or softmax(logits) over E      (the affinity s)
//   selection: top_k of (s + bias) per token, optionally group-limited: keep the topk_groups
//     groups with the highest sum of their top-2 (s + bias), choose only inside them.
//     Ties go to the lower expert index, so selection is deterministic.
//   idx [N, K] chosen experts, in descending (s + bias); gates [N, K] use the unbiased s:
//     sigmoid: g = route_scale · s / Σ_K s;   softmax: g = route_scale · s.
// The bias is fp32 and never gets a gradient. Instantiated for float and double.
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

struct RouterConfig {
  int64_t experts = 0;
  int64_t top_k = 0;
  int64_t n_groups = 1;
  int64_t topk_groups = 1;
  bool softmax = false;  // false: sigmoid
  double route_scale = 1.0;
};

template <typename T>
void RouterScores(const T* logits, T* scores, int64_t n, const RouterConfig& cfg);

// bias [E] (may be null: zero).
template <typename T>
void RouterSelect(const T* scores, const float* bias, int32_t* idx, T* gates, int64_t n,
                  const RouterConfig& cfg);

// dscores [N, E] += the gradient reaching the scores through the gate values.
template <typename T>
void RouterGatesBackward(const T* dgates, const T* scores, const int32_t* idx, T* dscores,
                         int64_t n, const RouterConfig& cfg);

// DeepSeek-V3's sequence-wise balance loss over b sequences of t tokens, averaged over the
// sequences: α Σ_i f_i P_i with f_i = E/(K t) · #tokens choosing i, P_i = mean_t s_i / Σ_j s_j.
// Returns the loss; when dscores is non-null adds dloss · d(loss)/d(scores) into it.
template <typename T>
double SeqBalanceLoss(const T* scores, const int32_t* idx, int64_t b, int64_t t, double alpha,
                      const RouterConfig& cfg, T* dscores, double dloss);

// dlogits [N, E] (=) from dscores.
template <typename T>
void RouterScoresBackward(const T* dscores, const T* scores, T* dlogits, int64_t n,
                          const RouterConfig& cfg);

// Aux-loss-free balancing of one MoE layer from the step's token counts [E]:
// bias_i += γ · sign(mean_load − load_i), in double. bias [E] is the layer's (host) bias.
template <typename T>
void UpdateBalanceBias(const int64_t* counts, int64_t experts, double gamma, T* bias);

}  // namespace moerun::kernels::cpu
