// CUDA twins of kernels/cpu/router.h (DeepSeek-V3's router, docs/architecture.md §4): affinity
// scores, bias-corrected and group-limited top-k selection, and their backward passes. The router
// runs in fp32 (its logits come from an fp32 GEMM), so these take float. Selection compares
// in double and breaks ties toward the lower expert index, exactly as the CPU twin, so both
// choose the same experts. Launchers take device pointers, plain sizes and an explicit
// stream; they return cudaErrorInvalidValue when top_k, n_groups or experts exceed the
// kernels' fixed limits below.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/router.h"

namespace moerun::kernels::cuda {

inline constexpr int64_t kRouterMaxTopK = 16;
inline constexpr int64_t kRouterMaxGroups = 64;

// scores [N, E] = sigmoid(logits) or softmax over E (cfg.softmax).
cudaError_t LaunchRouterScores(const float* logits, float* scores, int64_t n,
                               const cpu::RouterConfig& cfg, cudaStream_t stream);

// idx [N, K] in descending (s + bias); gates [N, K] from the unbiased s. bias [E] may be null.
cudaError_t LaunchRouterSelect(const float* scores, const float* bias, int32_t* idx, float* gates,
                               int64_t n, const cpu::RouterConfig& cfg, cudaStream_t stream);

// dscores [N, E] += the gradient through the gates.
cudaError_t LaunchRouterGatesBackward(const float* dgates, const float* scores, const int32_t* idx,
                                      float* dscores, int64_t n, const cpu::RouterConfig& cfg,
                                      cudaStream_t stream);

// dlogits [N, E] (=) from dscores.
cudaError_t LaunchRouterScoresBackward(const float* dscores, const float* scores, float* dlogits,
                                       int64_t n, const cpu::RouterConfig& cfg,
                                       cudaStream_t stream);

// DeepSeek-V3's sequence-wise balance loss over b sequences of t tokens (the CPU twin's
// definition and double-precision order): *loss (device double) = α Σ_seqs Σ_i f_i P_i / b.
// When dscores is non-null, adds dloss · d(loss)/d(scores) into it.
// Scratch (device doubles): row_sum [b·t], f [b·E], seq [b].
struct BalanceScratch {
  double* row_sum = nullptr;
  double* f = nullptr;
  double* seq = nullptr;
};
cudaError_t LaunchSeqBalanceLoss(const float* scores, const int32_t* idx, int64_t b, int64_t t,
                                 double alpha, const cpu::RouterConfig& cfg, float* dscores,
                                 double dloss, double* loss, const BalanceScratch& scratch,
                                 cudaStream_t stream);

}  // namespace moerun::kernels::cuda
