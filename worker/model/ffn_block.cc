#include "worker/model/ffn_block.h"

#include <algorithm>

#include "kernels/cpu/elementwise.h"

namespace moerun::model {

namespace cpu = kernels::cpu;

template <typename T>
void MlpForward(const T* x, int64_t n, int64_t d, const MlpWeights<T>& w, T* g, T* u, T* a, T* y,
                bool accumulate_y) {
  const int64_t h = w.hidden;
  LinearForwardPair(x, w.gate, w.up, g, u, n, d, h, w.precision);
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
  LinearBackwardPair(dg, du, x, w.gate, w.up, dx, w.dgate, w.dup, n, d, h, accumulate_dx,
                     w.precision);
}

namespace {

Status Exchange(comm::Communicator* g, const void* send, const std::vector<size_t>& sb, void* recv,
                const std::vector<size_t>& rb, const char* what) {
  return g->AllToAllV(send, sb, recv, rb).WithContext(std::string("expert ") + what);
}

// Rows of each (source member, local expert) pair, received in source-major order, are
// regrouped by local expert so every local expert runs one GEMM per matrix.
template <typename T>
Status ExpertsForwardParallel(const MoeShape& shape, const MoeWeights<T>& w, MoeActivations<T>& act,
                              const ExpertParallel& ep) {
  const int64_t d = shape.d_model, he = shape.expert_hidden, epr = ep.experts_per_rank;
  const int p = ep.group->size();
  const auto& plan = act.plan;
  // 1. How many rows each member sends each of our experts. plan.counts is in global expert
  //    order, which is owner-major, so it is already laid out per destination.
  std::vector<int64_t> recv_counts(static_cast<size_t>(p * epr));
  std::vector<size_t> count_bytes(static_cast<size_t>(p), size_t(epr) * sizeof(int64_t));
  MOERUN_RETURN_IF_ERROR(Exchange(ep.group, plan.counts.data(), count_bytes, recv_counts.data(),
                                  count_bytes, "counts"));
  // 2. The rows themselves, 3. grouped by local expert (source order inside each expert, so
  //    results are deterministic).
  auto& x = act.exchange;
  PlanExpertExchange(plan.counts.data(), recv_counts.data(), p, epr, size_t(d) * sizeof(T), &x);
  const int64_t r = x.received;
  act.rbuf.resize(static_cast<size_t>(r * d));
  MOERUN_RETURN_IF_ERROR(
      Exchange(ep.group, act.buf.data(), x.send_bytes, act.rbuf.data(), x.recv_bytes, "dispatch"));
  act.gbuf.resize(act.rbuf.size());
  cpu::GatherRows(act.rbuf.data(), x.perm.data(), act.gbuf.data(), r, d);
  // 4. Our experts.
  act.geg.resize(static_cast<size_t>(r * he));
  act.geu.resize(act.geg.size());
  act.gea.resize(act.geg.size());
  act.geo.resize(act.gbuf.size());
  for (int64_t le = 0, o = 0; le < epr; o += x.local_counts[size_t(le)], ++le) {
    const int64_t c = x.local_counts[size_t(le)];
    if (c == 0) continue;
    MlpForward(act.gbuf.data() + o * d, c, d, w.experts[size_t(le)], act.geg.data() + o * he,
               act.geu.data() + o * he, act.gea.data() + o * he, act.geo.data() + o * d, false);
  }
  // 5. Outputs back to where their rows came from.
  act.rout.resize(act.rbuf.size());
  cpu::ScatterRows(act.geo.data(), x.perm.data(), act.rout.data(), r, d);
  return Exchange(ep.group, act.rout.data(), x.recv_bytes, act.eo.data(), x.send_bytes, "combine");
}

// The mirror: output gradients travel to the experts, input gradients come back.
template <typename T>
Status ExpertsBackwardParallel(const MoeShape& shape, const MoeWeights<T>& w,
                               MoeActivations<T>& act, const ExpertParallel& ep) {
  const int64_t d = shape.d_model, he = shape.expert_hidden, epr = ep.experts_per_rank;
  const auto& x = act.exchange;
  const int64_t r = x.received;
  // rout receives the output gradients (source-major), geo takes them grouped by expert.
  MOERUN_RETURN_IF_ERROR(Exchange(ep.group, act.deo.data(), x.send_bytes, act.rout.data(),
                                  x.recv_bytes, "combine backward"));
  cpu::GatherRows(act.rout.data(), x.perm.data(), act.geo.data(), r, d);
  // rbuf (the forward's received rows, no longer needed) takes the grouped input gradients.
  for (int64_t le = 0, o = 0; le < epr; o += x.local_counts[size_t(le)], ++le) {
    const int64_t c = x.local_counts[size_t(le)];
    if (c == 0) continue;
    MlpBackward(act.geo.data() + o * d, act.gbuf.data() + o * d, c, d, w.experts[size_t(le)],
                act.geg.data() + o * he, act.geu.data() + o * he, act.gea.data() + o * he,
                act.rbuf.data() + o * d, false, act.mlp_scratch);
  }
  cpu::ScatterRows(act.rbuf.data(), x.perm.data(), act.rout.data(), r, d);
  return Exchange(ep.group, act.rout.data(), x.recv_bytes, act.dbuf.data(), x.send_bytes,
                  "dispatch backward");
}

}  // namespace

template <typename T>
Status MoeForward(const T* x, int64_t b, int64_t s, const MoeShape& shape, const MoeWeights<T>& w,
                  MoeActivations<T>& act, T* y, const ExpertParallel* ep) {
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
  cpu::DispatchRows(x, act.plan, act.buf.data(), d);
  if (ep != nullptr && ep->group != nullptr) {
    MOERUN_RETURN_IF_ERROR(ExpertsForwardParallel(shape, w, act, *ep));
  } else {
    act.eg.resize(static_cast<size_t>(rows * he));
    act.eu.resize(act.eg.size());
    act.ea.resize(act.eg.size());
    for (int64_t x_e = 0; x_e < e; ++x_e) {
      const int64_t o = act.plan.offsets[x_e], c = act.plan.counts[x_e];
      if (c == 0) continue;
      MlpForward(act.buf.data() + o * d, c, d, w.experts[x_e], act.eg.data() + o * he,
                 act.eu.data() + o * he, act.ea.data() + o * he, act.eo.data() + o * d, false);
    }
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
  return Status::OK();
}

template <typename T>
Status MoeBackward(const T* dy, const T* x, int64_t b, int64_t s, const MoeShape& shape,
                   const MoeWeights<T>& w, MoeActivations<T>& act, double dloss, T* dx,
                   const ExpertParallel* ep) {
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
  if (ep != nullptr && ep->group != nullptr) {
    MOERUN_RETURN_IF_ERROR(ExpertsBackwardParallel(shape, w, act, *ep));
  } else {
    for (int64_t x_e = 0; x_e < e; ++x_e) {
      const int64_t o = act.plan.offsets[x_e], c = act.plan.counts[x_e];
      if (c == 0) continue;
      MlpBackward(deo.data() + o * d, act.buf.data() + o * d, c, d, w.experts[x_e],
                  act.eg.data() + o * he, act.eu.data() + o * he, act.ea.data() + o * he,
                  dbuf.data() + o * d, false, scratch);
    }
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
  return Status::OK();
}

#define MOERUN_INSTANTIATE(T)                                                                      \
  template void MlpForward<T>(const T*, int64_t, int64_t, const MlpWeights<T>&, T*, T*, T*, T*,    \
                              bool);                                                               \
  template void MlpBackward<T>(const T*, const T*, int64_t, int64_t, const MlpWeights<T>&,         \
                               const T*, const T*, const T*, T*, bool, std::vector<T>&);           \
  template Status MoeForward<T>(const T*, int64_t, int64_t, const MoeShape&, const MoeWeights<T>&, \
                                MoeActivations<T>&, T*, const ExpertParallel*);                    \
  template Status MoeBackward<T>(const T*, const T*, int64_t, int64_t, const MoeShape&,            \
                                 const MoeWeights<T>&, MoeActivations<T>&, double, T*,             \
                                 const ExpertParallel*);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::model
