// The feed-forward half of a decoder layer: the SwiGLU MLP (dense layers, shared experts and
// each routed expert) and the MoE block (router, dispatch, experts, combine, balance loss).
// Internal to ModelStage. Buffers are row-major [rows, width].
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/moe_dispatch.h"
#include "kernels/cpu/router.h"
#include "worker/comm/communicator.h"
#include "worker/model/expert_exchange_plan.h"
#include "worker/model/linear.h"

namespace moerun::model {

template <typename T>
struct MlpWeights {
  const T *gate, *up, *down;  // [H, D], [H, D], [D, H]
  T *dgate, *dup, *ddown;     // their gradients (+=)
  int64_t hidden;
  GemmPrecision precision = GemmPrecision::kFp32;
};

// y (= or +=) down(silu(x gateᵀ) * x upᵀ); saves g, u, a [n, hidden].
template <typename T>
void MlpForward(const T* x, int64_t n, int64_t d, const MlpWeights<T>& w, T* g, T* u, T* a, T* y,
                bool accumulate_y);

// dx (= or +=); weight gradients (+=). `scratch` holds 3·n·hidden values.
template <typename T>
void MlpBackward(const T* dy, const T* x, int64_t n, int64_t d, const MlpWeights<T>& w, const T* g,
                 const T* u, const T* a, T* dx, bool accumulate_dx, std::vector<T>& scratch);

template <typename T>
struct MoeActivations {
  std::vector<T> scores, gates;  // [N, E], [N, K]
  std::vector<int32_t> idx;      // [N, K]
  kernels::cpu::DispatchPlan plan;
  std::vector<T> buf, eg, eu, ea, eo;  // [N·K, D], [N·K, He] x3, [N·K, D]
  std::vector<T> sg, su, sa;           // shared experts [N, Hs]
  double balance_loss = 0;
  // Scratch reused across calls: large buffers freed and reallocated every micro-batch cost
  // more in page faults than the arithmetic around them.
  std::vector<T> logits, dscores, dgates, deo, dbuf, mlp_scratch;
  // Expert parallelism: rows exchanged with the group (worker/model/expert_exchange_plan.h).
  // rbuf holds received rows by source member, then by local expert; gbuf, geg, geu, gea and
  // geo hold them grouped by local expert (exchange.perm).
  ExpertExchangePlan exchange;
  std::vector<T> rbuf, gbuf, geg, geu, gea, geo, rout;
};

struct MoeShape {
  kernels::cpu::RouterConfig router;
  int64_t d_model = 0, expert_hidden = 0, shared_hidden = 0;  // shared_hidden 0: none
  double seq_aux_alpha = 0;
  GemmPrecision router_precision = GemmPrecision::kFp32;  // gating stays high precision
};

template <typename T>
struct MoeWeights {
  const T* router;  // [E, D]
  T* drouter;
  const float* bias;                   // [E] balancing bias
  std::vector<MlpWeights<T>> experts;  // the experts this rank holds, in expert order
  MlpWeights<T> shared;
};

// Expert parallelism (docs/architecture.md §5): a layer's routed experts are spread over `group`,
// member m holding experts [m·experts_per_rank, (m+1)·experts_per_rank). Tokens travel to their
// experts' owners by all-to-all (dispatch) and their outputs come back the same way
// (combine); the backward pass mirrors both. A null group keeps every expert local.
// A data-plane failure comes back as itself (TimedOut, Aborted, Unavailable), its message
// naming the exchange.
struct ExpertParallel {
  comm::Communicator* group = nullptr;
  int64_t experts_per_rank = 0;
};

// y (=) MoE(x) for b sequences of s tokens; x [N, D].
template <typename T>
Status MoeForward(const T* x, int64_t b, int64_t s, const MoeShape& shape, const MoeWeights<T>& w,
                  MoeActivations<T>& act, T* y, const ExpertParallel* ep = nullptr);

// dx (=) from dy; the balance loss's gradient is scaled by dloss.
template <typename T>
Status MoeBackward(const T* dy, const T* x, int64_t b, int64_t s, const MoeShape& shape,
                   const MoeWeights<T>& w, MoeActivations<T>& act, double dloss, T* dx,
                   const ExpertParallel* ep = nullptr);

}  // namespace moerun::model
