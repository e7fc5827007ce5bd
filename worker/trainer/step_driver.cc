#include "worker/trainer/step_driver.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/optimizer.h"
#include "worker/trainer/pipeline_schedule.h"
#include "worker/trainer/step_metrics.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {

StepDriver::StepDriver(const JobSpec& spec, Topology* topo, const data::Corpus* corpus,
                       std::unique_ptr<StageBackend> backend)
    : spec_(spec),
      topo_(topo),
      corpus_(corpus),
      backend_(std::move(backend)),
      link_(backend_->groups().stages) {
  seq_ = spec.model.seq_len;
  micro_seqs_ = spec.train.global_batch / (spec.parallel.data * spec.parallel.micro_batches);
}

Status StepDriver::ReceiveInput(int64_t m, int64_t sequences, uint32_t tag) {
  // The op starts with its receive (or Flush): a held send's buffer is written only after.
  if (topo_->first_stage()) return link_.Flush();
  auto in = backend_->InputFor(m, sequences);
  if (!in.ok()) return in.status();
  return link_.Recv(topo_->prev, tag, in.value(), backend_->BoundaryBytes(sequences));
}

Status StepDriver::Forward(int64_t m, int64_t step, int64_t global_micro) {
  Topology& t = *topo_;
  StageBackend& b = *backend_;
  const int64_t n = micro_seqs_ * seq_;
  if (t.first_stage() || t.last_stage()) {
    ids_[size_t(m)].resize(size_t(n));
    targets_[size_t(m)].resize(size_t(n));
    for (int64_t j = 0; j < micro_seqs_; ++j)
      corpus_->SampleTrain(spec_.train.seed, step - 1, global_micro * micro_seqs_ + j,
                           Ids(m) + j * seq_, Targets(m) + j * seq_);
  }
  const size_t bytes = b.BoundaryBytes(micro_seqs_);
  MOERUN_RETURN_IF_ERROR(ReceiveInput(m, micro_seqs_, ForwardTag(m)));
  auto loss = b.Forward(m, Ids(m), Targets(m), micro_seqs_);
  if (!loss.ok()) return loss.status();
  if (t.last_stage()) loss_sum_ += loss.value(), mtp_sum_ += b.mtp_loss();
  balance_sum_ += b.balance_loss();
  const int64_t experts = std::max<int64_t>(spec_.model.moe.routed_experts, 0);
  for (int64_t l = 0; l < b.moe_layers(); ++l) {
    const int64_t* c = b.ExpertCounts(l);
    for (int64_t e = 0; e < experts; ++e) counts_[size_t(l * experts + e)] += double(c[e]);
  }
  // Held by the link until the next op's receive (or Flush); nothing writes Output() before.
  if (!t.last_stage()) MOERUN_RETURN_IF_ERROR(link_.Send(t.next, ForwardTag(m), b.Output(), bytes));
  return Status::OK();
}

Status StepDriver::Backward(int64_t m, double dloss) {
  Topology& t = *topo_;
  StageBackend& b = *backend_;
  if (b.NeedsForwardAgain(m)) {
    // The held send goes out first (the neighbour may be waiting for it); the forward then
    // runs again while the next stage computes the gradient this backward waits for.
    MOERUN_RETURN_IF_ERROR(link_.Flush());
    auto again = b.Forward(m, Ids(m), Targets(m), micro_seqs_);
    if (!again.ok()) return again.status();
  }
  const size_t bytes = b.BoundaryBytes(micro_seqs_);
  if (t.last_stage()) {
    MOERUN_RETURN_IF_ERROR(link_.Flush());
  } else {  // paired with a held send to the same stage
    auto grad = b.OutputGradFor(m);
    if (!grad.ok()) return grad.status();
    MOERUN_RETURN_IF_ERROR(link_.Recv(t.next, BackwardTag(m), grad.value(), bytes));
  }
  MOERUN_RETURN_IF_ERROR(b.Backward(m, dloss));
  if (!t.first_stage())
    MOERUN_RETURN_IF_ERROR(link_.Send(t.prev, BackwardTag(m), b.InputGrad(), bytes));
  return Status::OK();
}

Status StepDriver::SumGradients() {
  const StageGroups g = backend_->groups();
  for (bool routed : {false, true}) {
    comm::Communicator* group = routed ? g.expert_gradients : g.dense_gradients;
    if (group == nullptr || group->size() == 1) continue;
    auto pack = backend_->PackGradients(routed);
    if (!pack.ok()) return pack.status();
    MOERUN_RETURN_IF_ERROR(group->AllReduceSum(pack->data, pack->count));
    MOERUN_RETURN_IF_ERROR(backend_->UnpackGradients(routed));
  }
  if (g.embedding != nullptr) {
    auto emb = backend_->EmbeddingGradient();
    if (!emb.ok()) return emb.status();
    MOERUN_RETURN_IF_ERROR(g.embedding->AllReduceSum(emb->data, emb->count));
  }
  return Status::OK();
}

Result<StepResult> StepDriver::Run(int64_t step, int64_t total_steps) {
  Topology& t = *topo_;
  StageBackend& b = *backend_;
  const ModelSpec& ms = spec_.model;
  const int64_t experts = std::max<int64_t>(ms.moe.routed_experts, 0);
  const int64_t micro = t.micro_batches;
  const auto ops = PipelineOps(spec_.parallel.schedule, t.pipeline, t.stage, micro);
  MOERUN_RETURN_IF_ERROR(b.BeginStep(std::max<int64_t>(MicroBatchesInFlight(ops), 1)));
  const int64_t stage_moe = b.moe_layers();
  counts_.assign(size_t(stage_moe * experts), 0.0);
  loss_sum_ = balance_sum_ = mtp_sum_ = 0;
  ids_.resize(size_t(micro));
  targets_.resize(size_t(micro));
  const double dloss = 1.0 / double(spec_.parallel.data * spec_.parallel.micro_batches);
  for (const PipelineOp& op : ops) {
    MOERUN_RETURN_IF_ERROR(op.forward ? Forward(op.micro, step, t.d * micro + op.micro)
                                      : Backward(op.micro, dloss));
  }
  MOERUN_RETURN_IF_ERROR(link_.Flush());

  // The same bias update on every replica of the stage, from the data group's counts.
  MOERUN_RETURN_IF_ERROR(t.data_group->AllReduceSum(counts_.data(), counts_.size()));
  std::vector<std::vector<int64_t>> layer_counts(static_cast<size_t>(stage_moe));
  for (int64_t l = 0; l < stage_moe; ++l)
    for (int64_t e = 0; e < experts; ++e)
      layer_counts[size_t(l)].push_back(int64_t(counts_[size_t(l * experts + e)]));
  MOERUN_RETURN_IF_ERROR(b.UpdateBalanceBias(ms.moe.balance.bias_update_speed, layer_counts));
  MOERUN_RETURN_IF_ERROR(SumGradients());

  // Every replica of a stage now holds its summed gradients: each parameter adds to the
  // global norm once, dense ones from replica 0, routed experts from the first expert group.
  auto sq = b.GradSquareSum(t.d == 0, t.d < t.expert);
  if (!sq.ok()) return sq.status();
  double global_sq = sq.value();
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&global_sq, 1));
  StepResult r;
  r.grad_norm = std::sqrt(global_sq);
  r.lr = LearningRate(spec_.train.optimizer, step, total_steps);
  const OptimizerSpec& o = spec_.train.optimizer;
  const kernels::cpu::AdamWStep adam{r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step};
  MOERUN_RETURN_IF_ERROR(b.ApplyStep(adam, kernels::cpu::ClipFactor(r.grad_norm, o.grad_clip)));

  // The stage's MoE layers are its last ones (the MTP modules' after them): the first is the
  // model's MoE layer max(layer_begin, dense_layers) − dense_layers.
  const int64_t first_moe =
      stage_moe == 0 ? 0 : std::max(t.range.layer_begin, ms.dense_layers) - ms.dense_layers;
  MOERUN_RETURN_IF_ERROR(
      GatherStepMetrics(spec_, t, {loss_sum_, balance_sum_, mtp_sum_}, counts_, first_moe, &r));
  return r;
}

Result<double> StepDriver::Evaluate(int64_t windows) {
  Topology& t = *topo_;
  StageBackend& b = *backend_;
  b.BeginEvaluation();
  const int64_t batches = (windows + micro_seqs_ - 1) / micro_seqs_;
  const int64_t rounds = (batches + t.data - 1) / t.data;
  const int64_t fixed = b.fixed_sequences();
  ids_.resize(std::max<size_t>(ids_.size(), 1));
  targets_.resize(std::max<size_t>(targets_.size(), 1));
  double total = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t q = round * t.data + t.d;
    const bool counted = q < batches;
    // Past the end: an empty forward, or the last batch again (not counted).
    const int64_t first = (fixed > 0 ? std::min(q, batches - 1) : q) * micro_seqs_;
    const int64_t real = counted || fixed > 0 ? std::min(micro_seqs_, windows - first) : 0;
    const int64_t sequences = fixed > 0 ? fixed : real;
    if (t.first_stage() || t.last_stage()) {
      ids_[0].resize(size_t(sequences * seq_));
      targets_[0].resize(ids_[0].size());
      // A short batch of fixed size repeats its last real window.
      for (int64_t j = 0; j < sequences; ++j)
        corpus_->ValidationWindow(first + std::min(j, real - 1), Ids(0) + j * seq_,
                                  Targets(0) + j * seq_);
    }
    const uint32_t tag = kEvalTagBase + ForwardTag(q);
    const size_t bytes = b.BoundaryBytes(sequences);
    MOERUN_RETURN_IF_ERROR(ReceiveInput(0, sequences, tag));
    auto loss = b.Forward(0, Ids(0), Targets(0), sequences);
    if (!loss.ok()) return loss.status();
    if (!t.last_stage()) {
      MOERUN_RETURN_IF_ERROR(link_.Send(t.next, tag, b.Output(), bytes));
    } else if (counted) {
      auto sum = b.SequenceLossSum(real);
      if (!sum.ok()) return sum.status();
      total += sum.value();
    }
  }
  MOERUN_RETURN_IF_ERROR(link_.Flush());
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&total, 1));
  return total / double(windows);
}

Result<bool> StepDriver::AnyRank(bool local) {
  double v = local ? 1.0 : 0.0;
  MOERUN_RETURN_IF_ERROR(topo_->world_comm->AllReduceSum(&v, 1));
  return v > 0;
}

}  // namespace moerun::trainer
