#include "worker/model/ffn_block.h"

#include <algorithm>

#include "kernels/cpu/elementwise.h"

namespace moerun::model {

namespace cpu = kernels::cpu;

template <typename T>
void MlpForward(const T* x, int64_t n, int64_t d, const MlpWeights<T>& w, T* g, T* u, T* a, T* y,
                bool accumulate_y) {
  const int64_t h = w.hidden;
  LinearForwardP(x, w.gate, g, n, d, h, w.precision);
  LinearForwardP(x, w.up, u, n, d, h, w.precision);
  cpu::SwiGluForward(g, u, a, n * h);
  LinearForwardP(a, w.down, y, n, h, d, w.precision, accumulate_y);
}

template <typename T>
void MlpBackward(const T* dy, const T* x, int64_t n, int64_t d, const MlpWeights<T>& w, const T* g,
                 const T* u, const T* a, T* dx, bool accumulate_dx, std::vector<T>& scratch) {
  const int64_t h = w.hidden;
  scratch.resize(static_cast<size_t>(3 * n * h));
  T* da = scratch.data();
  T* dg = da + n * h;
  T* du = dg + n * h;
  LinearBackwardP(dy, a, w.down, da, w.ddown, n, h, d, false, w.precision);
  cpu::SwiGluBackward(da, g, u, dg, du, n * h);
  LinearBackwardP(dg, x, w.gate, dx, w.dgate, n, d, h, accumulate_dx, w.precision);
  LinearBackwardP(du, x, w.up, dx, w.dup, n, d, h, true, w.precision);
}

template <typename T>
void MoeForward(const T* x, int64_t b, int64_t s, const MoeShape& shape, const MoeWeights<T>& w,
                MoeActivations<T>& act, T* y) {
  const auto& cfg = shape.router;
  const int64_t n = b * s, d = shape.d_model, e = cfg.experts, k = cfg.top_k;
  const int64_t he = shape.expert_hidden;
  std::vector<T>& logits = act.logits;
  logits.resize(static_cast<size_t>(n * e));
  act.scores.resize(logits.size());
  act.idx.resize(static_cast<size_t>(n * k));
  act.gates.resize(static_cast<size_t>(n * k));
  LinearForwardP(x, w.router, logits.data(), n, d, e, shape.router_precision);
  cpu::RouterScores(logits.data(), act.scores.data(), n, cfg);
  cpu::RouterSelect(act.scores.data(), w.bias, act.idx.data(), act.gates.data(), n, cfg);
  act.plan = cpu::PlanDispatch(act.idx.data(), n, k, e);

  const int64_t rows = n * k;
  act.buf.resize(static_cast<size_t>(rows * d));
  act.eo.resize(static_cast<size_t>(rows * d));
  act.eg.resize(static_cast<size_t>(rows * he));
  act.eu.resize(act.eg.size());
  act.ea.resize(act.eg.size());
  cpu::DispatchRows(x, act.plan, act.buf.data(), d);
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    const int64_t o = act.plan.offsets[x_e], c = act.plan.counts[x_e];
    if (c == 0) continue;
    MlpForward(act.buf.data() + o * d, c, d, w.experts[x_e], act.eg.data() + o * he,
               act.eu.data() + o * he, act.ea.data() + o * he, act.eo.data() + o * d, false);
  }
  if (shape.shared_hidden > 0) {
    const size_t sz = static_cast<size_t>(n * shape.shared_hidden);
    act.sg.resize(sz);
    act.su.resize(sz);
    act.sa.resize(sz);
    MlpForward(x, n, d, w.shared, act.sg.data(), act.su.data(), act.sa.data(), y, false);
  } else {
    std::fill(y, y + n * d, T(0));
  }
  cpu::Combine(act.eo.data(), act.gates.data(), act.plan, y, d);
  act.balance_loss = shape.seq_aux_alpha > 0
                         ? cpu::SeqBalanceLoss<T>(act.scores.data(), act.idx.data(), b, s,
                                                  shape.seq_aux_alpha, cfg, nullptr, 1.0)
                         : 0.0;
}

template <typename T>
void MoeBackward(const T* dy, const T* x, int64_t b, int64_t s, const MoeShape& shape,
                 const MoeWeights<T>& w, MoeActivations<T>& act, double dloss, T* dx) {
  const auto& cfg = shape.router;
  const int64_t n = b * s, d = shape.d_model, e = cfg.experts, k = cfg.top_k;
  const int64_t he = shape.expert_hidden, rows = n * k;
  std::vector<T>& scratch = act.mlp_scratch;
  if (shape.shared_hidden > 0) {
    MlpBackward(dy, x, n, d, w.shared, act.sg.data(), act.su.data(), act.sa.data(), dx, false,
                scratch);
  } else {
    std::fill(dx, dx + n * d, T(0));
  }
  std::vector<T>& deo = act.deo;
  std::vector<T>& dgates = act.dgates;
  deo.resize(static_cast<size_t>(rows * d));
  dgates.resize(static_cast<size_t>(n * k));
  cpu::CombineBackward(dy, act.eo.data(), act.gates.data(), act.plan, deo.data(), dgates.data(), d);
  std::vector<T>& dbuf = act.dbuf;
  dbuf.resize(static_cast<size_t>(rows * d));
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    const int64_t o = act.plan.offsets[x_e], c = act.plan.counts[x_e];
    if (c == 0) continue;
    MlpBackward(deo.data() + o * d, act.buf.data() + o * d, c, d, w.experts[x_e],
                act.eg.data() + o * he, act.eu.data() + o * he, act.ea.data() + o * he,
                dbuf.data() + o * d, false, scratch);
  }
  cpu::DispatchRowsBackward(dbuf.data(), act.plan, dx, d);

  std::vector<T>& dscores = act.dscores;
  dscores.assign(static_cast<size_t>(n * e), T(0));
  std::vector<T>& dlogits = act.logits;  // the forward's logits are not needed any more
  dlogits.resize(dscores.size());
  cpu::RouterGatesBackward(dgates.data(), act.scores.data(), act.idx.data(), dscores.data(), n,
                           cfg);
  if (shape.seq_aux_alpha > 0) {
    cpu::SeqBalanceLoss(act.scores.data(), act.idx.data(), b, s, shape.seq_aux_alpha, cfg,
                        dscores.data(), dloss);
  }
  cpu::RouterScoresBackward(dscores.data(), act.scores.data(), dlogits.data(), n, cfg);
  LinearBackwardP(dlogits.data(), x, w.router, dx, w.drouter, n, d, e, true,
                  shape.router_precision);
}

#define MOERUN_INSTANTIATE(T)                                                                    \
  template void MlpForward<T>(const T*, int64_t, int64_t, const MlpWeights<T>&, T*, T*, T*, T*,  \
                              bool);                                                             \
  template void MlpBackward<T>(const T*, const T*, int64_t, int64_t, const MlpWeights<T>&,       \
                               const T*, const T*, const T*, T*, bool, std::vector<T>&);         \
  template void MoeForward<T>(const T*, int64_t, int64_t, const MoeShape&, const MoeWeights<T>&, \
                              MoeActivations<T>&, T*);                                           \
  template void MoeBackward<T>(const T*, const T*, int64_t, int64_t, const MoeShape&,            \
                               const MoeWeights<T>&, MoeActivations<T>&, double, T*);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::model
