#include "worker/trainer/step_runner.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/optimizer.h"
#include "worker/trainer/pipeline_schedule.h"
#include "worker/trainer/step_metrics.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {
namespace {
namespace cpu = kernels::cpu;
}  // namespace

StepRunner::StepRunner(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
                       model::ModelStage<float>* stage, OptimizerState* opt,
                       const data::Corpus* corpus)
    : spec_(spec),
      topo_(topo),
      params_(params),
      stage_(stage),
      opt_(opt),
      corpus_(corpus),
      link_(topo->world_comm.get()) {
  seq_ = spec.model.seq_len;
  micro_seqs_ = spec.train.global_batch / (spec.parallel.data * spec.parallel.micro_batches);
}

Status StepRunner::Forward(int64_t m, int64_t global_micro, int64_t batch, bool eval,
                           const int64_t* windows) {
  const int64_t n = batch * seq_, d = spec_.model.d_model;
  Topology& t = *topo_;
  if (t.first_stage() || t.last_stage()) {
    inputs_.resize(size_t(n));
    targets_.resize(size_t(n));
    for (int64_t j = 0; j < batch; ++j) {
      if (eval) {
        corpus_->ValidationWindow(windows[j], inputs_.data() + j * seq_,
                                  targets_.data() + j * seq_);
      } else {
        corpus_->SampleTrain(spec_.train.seed, cur_step_ - 1, global_micro * micro_seqs_ + j,
                             inputs_.data() + j * seq_, targets_.data() + j * seq_);
      }
    }
  }
  const uint32_t tag = eval ? kEvalTagBase + ForwardTag(global_micro) : ForwardTag(m);
  // The op starts with its receive (or Flush): a held send's buffer is written only after.
  if (t.first_stage()) {
    MOERUN_RETURN_IF_ERROR(link_.Flush());
  } else {
    hidden_in_.resize(size_t(n * d));
    MOERUN_RETURN_IF_ERROR(link_.Recv(t.prev, tag, hidden_in_.data(), hidden_in_.size() * 4));
  }
  hidden_out_.resize(size_t(n * d));
  double loss = 0;
  try {
    loss = stage_->Forward(acts_[size_t(m)], t.first_stage() ? inputs_.data() : nullptr,
                           t.first_stage() ? nullptr : hidden_in_.data(),
                           t.last_stage() ? targets_.data() : nullptr, batch, seq_,
                           t.last_stage() ? nullptr : hidden_out_.data());
  } catch (const model::DataPlaneError& e) {
    return Status::Unavailable(e.what());
  }
  if (t.last_stage()) loss_sum_ += eval ? loss * double(batch) : loss;
  balance_sum_ += acts_[size_t(m)].balance_loss;
  if (!eval) {
    const auto& c = stage_->expert_counts();
    for (size_t l = 0; l < c.size(); ++l)
      for (size_t e = 0; e < c[l].size(); ++e) counts_[l * c[l].size() + e] += double(c[l][e]);
  }
  if (!t.last_stage())
    MOERUN_RETURN_IF_ERROR(link_.Send(t.next, tag, hidden_out_.data(), hidden_out_.size() * 4));
  return Status::OK();
}

Status StepRunner::Backward(int64_t m, double dloss) {
  Topology& t = *topo_;
  auto& a = acts_[size_t(m)];
  const size_t elems = size_t(a.batch * seq_ * spec_.model.d_model);
  if (t.last_stage()) {
    MOERUN_RETURN_IF_ERROR(link_.Flush());
  } else {
    grad_out_.resize(elems);
    MOERUN_RETURN_IF_ERROR(link_.Recv(t.next, BackwardTag(m), grad_out_.data(), elems * 4));
  }
  grad_in_.resize(elems);
  try {
    stage_->Backward(a, dloss, t.last_stage() ? nullptr : grad_out_.data(),
                     t.first_stage() ? nullptr : grad_in_.data());
  } catch (const model::DataPlaneError& e) {
    return Status::Unavailable(e.what());
  }
  if (!t.first_stage())
    MOERUN_RETURN_IF_ERROR(link_.Send(t.prev, BackwardTag(m), grad_in_.data(), elems * 4));
  return Status::OK();
}

Status StepRunner::SyncGradients() {
  // Dense gradients over the data group, expert gradients over the replica group, each
  // packed into one buffer so a step costs two all-reduces.
  for (bool experts : {false, true}) {
    comm::Communicator* g = experts ? topo_->replica_group.get() : topo_->data_group.get();
    if (g->size() == 1) continue;
    const std::vector<model::TensorRun> runs = model::TrainableRuns(params_->views(), experts);
    float* grads = params_->grads().data();
    pack_.clear();
    for (const auto& run : runs)
      pack_.insert(pack_.end(), grads + run.offset, grads + run.offset + run.count);
    MOERUN_RETURN_IF_ERROR(g->AllReduceSum(pack_.data(), pack_.size()));
    size_t o = 0;
    for (const auto& run : runs) {
      std::copy_n(pack_.data() + o, run.count, grads + run.offset);
      o += size_t(run.count);
    }
  }
  return Status::OK();
}

Result<StepResult> StepRunner::Run(int64_t step, int64_t total_steps) {
  Topology& t = *topo_;
  const ModelSpec& mspec = spec_.model;
  const int64_t experts = mspec.moe.routed_experts;
  cur_step_ = step;
  params_->ZeroGrads();
  counts_.assign(stage_->moe_layers().size() * size_t(std::max<int64_t>(experts, 0)), 0.0);
  loss_sum_ = balance_sum_ = 0;
  const int64_t micro = t.micro_batches;
  acts_.resize(size_t(micro));
  const double dloss = 1.0 / double(spec_.parallel.data * spec_.parallel.micro_batches);
  for (const PipelineOp& op : PipelineOps(spec_.parallel.schedule, t.pipeline, t.stage, micro)) {
    if (op.forward) {
      MOERUN_RETURN_IF_ERROR(
          Forward(op.micro, t.d * micro + op.micro, micro_seqs_, false, nullptr));
    } else {
      MOERUN_RETURN_IF_ERROR(Backward(op.micro, dloss));
    }
  }
  MOERUN_RETURN_IF_ERROR(link_.Flush());

  // Global expert counts of this stage, then the same bias update on every replica.
  MOERUN_RETURN_IF_ERROR(t.data_group->AllReduceSum(counts_.data(), counts_.size()));
  std::vector<int64_t> layer_counts(size_t(std::max<int64_t>(experts, 0)));
  for (size_t l = 0; l < stage_->moe_layers().size(); ++l) {
    for (int64_t e = 0; e < experts; ++e)
      layer_counts[size_t(e)] = int64_t(counts_[l * size_t(experts) + size_t(e)]);
    stage_->UpdateBalanceBias(stage_->moe_layers()[l], layer_counts.data(),
                              mspec.moe.balance.bias_update_speed);
  }
  MOERUN_RETURN_IF_ERROR(SyncGradients());

  // Every parameter once: dense ones from replica 0, experts from the first expert group.
  double sq = 0;
  for (const auto& v : params_->views()) {
    if (!v.info.trainable()) continue;
    const bool expert = v.info.role == TensorRole::kRoutedExpert;
    if (expert ? t.d < t.expert : t.d == 0)
      sq += cpu::SumOfSquares(params_->grads().data() + v.offset, v.info.numel());
  }
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&sq, 1));
  StepResult r;
  r.grad_norm = std::sqrt(sq);
  const double clip = cpu::ClipFactor(r.grad_norm, spec_.train.optimizer.grad_clip);
  r.lr = LearningRate(spec_.train.optimizer, step, total_steps);
  const OptimizerSpec& o = spec_.train.optimizer;
  cpu::AdamWStep adam{r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step};
  for (const auto& v : params_->views()) {
    if (!v.info.trainable()) continue;
    float* g = params_->grads().data() + v.offset;
    if (clip != 1.0) cpu::ScaleInPlace(g, v.info.numel(), float(clip));
    cpu::AdamWUpdate(params_->values().data() + v.offset, g, opt_->m.data() + v.offset,
                     opt_->v.data() + v.offset, v.info.numel(), adam, v.info.is_matrix());
  }

  const auto& moe = stage_->moe_layers();
  MOERUN_RETURN_IF_ERROR(GatherStepMetrics(spec_, t, loss_sum_, balance_sum_, counts_,
                                           moe.empty() ? 0 : moe.front() - mspec.dense_layers, &r));
  return r;
}

Result<double> StepRunner::Evaluate(int64_t windows) {
  Topology& t = *topo_;
  loss_sum_ = balance_sum_ = 0;
  acts_.resize(std::max<size_t>(acts_.size(), 1));
  const int64_t batches = (windows + micro_seqs_ - 1) / micro_seqs_;
  const int64_t rounds = (batches + t.data - 1) / t.data;
  std::vector<int64_t> ids;
  // Every replica runs the same number of forwards (empty ones past the end), because the
  // expert groups' exchanges need all their members.
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t q = round * t.data + t.d;
    const int64_t first = q * micro_seqs_;
    const int64_t batch = q < batches ? std::min(micro_seqs_, windows - first) : 0;
    ids.resize(size_t(batch));
    for (int64_t j = 0; j < batch; ++j) ids[size_t(j)] = first + j;
    MOERUN_RETURN_IF_ERROR(Forward(0, q, batch, true, ids.data()));
  }
  MOERUN_RETURN_IF_ERROR(link_.Flush());
  double total = t.last_stage() ? loss_sum_ : 0.0;
  MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&total, 1));
  return total / double(windows);
}

std::string StepRunner::Describe() const {
  return "CPU, " + std::to_string(spec_.resources.threads_per_trainer) + " thread(s), " +
         std::string(ToString(spec_.train.precision));
}

Result<bool> StepRunner::AnyRank(bool local) {
  double v = local ? 1.0 : 0.0;
  MOERUN_RETURN_IF_ERROR(topo_->world_comm->AllReduceSum(&v, 1));
  return v > 0;
}

}  // namespace moerun::trainer
