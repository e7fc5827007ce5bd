#include "worker/trainer/cpu_stage.h"

#include <algorithm>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/optimizer.h"

namespace moerun::trainer {
namespace {
namespace cpu = kernels::cpu;
}  // namespace

CpuStage::CpuStage(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
                   OptimizerState* opt)
    : spec_(spec), topo_(topo), params_(params), opt_(opt) {
  model::ExpertParallel ep;
  if (topo->expert > 1)
    ep = {topo->expert_group.get(), spec.model.moe.routed_experts / topo->expert};
  stage_ = std::make_unique<model::ModelStage<float>>(spec.model, topo->range, params,
                                                      spec.train.precision, ep);
  for (bool routed : {false, true})
    runs_[routed ? 1 : 0] = model::TrainableRuns(params->views(), routed);
}

StageGroups CpuStage::groups() const {
  return {topo_->world_comm.get(), topo_->data_group.get(), topo_->replica_group.get(),
          topo_->embedding_group.get()};
}

Status CpuStage::BeginStep(int64_t in_flight) {
  stage_->set_mtp_enabled(true);
  // Every micro-batch keeps its own activations: slot m for micro-batch m.
  acts_.resize(size_t(std::max(in_flight, topo_->micro_batches)));
  params_->ZeroGrads();
  return Status::OK();
}

void CpuStage::BeginEvaluation() {
  stage_->set_mtp_enabled(false);
  acts_.resize(std::max<size_t>(acts_.size(), 1));
}

size_t CpuStage::BoundaryBytes(int64_t sequences) const {
  return size_t(sequences * spec_.model.seq_len * spec_.model.d_model) * sizeof(float);
}

Result<void*> CpuStage::InputFor(int64_t, int64_t sequences) {
  // Forward copies what it needs into the micro-batch's activations: one buffer serves all.
  hidden_in_.resize(BoundaryBytes(sequences) / sizeof(float));
  return static_cast<void*>(hidden_in_.data());
}

Result<double> CpuStage::Forward(int64_t micro, const int32_t* ids, const int32_t* targets,
                                 int64_t sequences) {
  const Topology& t = *topo_;
  hidden_out_.resize(BoundaryBytes(sequences) / sizeof(float));
  auto& a = acts_[size_t(micro)];
  auto loss = stage_->Forward(a, t.first_stage() ? ids : nullptr,
                              t.first_stage() ? nullptr : hidden_in_.data(),
                              t.last_stage() ? targets : nullptr, sequences, spec_.model.seq_len,
                              t.last_stage() ? nullptr : hidden_out_.data());
  if (!loss.ok()) return loss.status();
  last_loss_ = loss.value();
  last_balance_loss_ = a.balance_loss;
  last_mtp_loss_ = a.mtp_loss;
  last_sequences_ = sequences;
  return t.last_stage() ? last_loss_ : 0.0;
}

Result<double> CpuStage::SequenceLossSum(int64_t sequences) const {
  if (sequences != last_sequences_) {
    return Status::InvalidArgument("CPU stage: the last forward ran " +
                                   std::to_string(last_sequences_) + " sequences, not " +
                                   std::to_string(sequences));
  }
  return last_loss_ * double(sequences);
}

Result<void*> CpuStage::OutputGradFor(int64_t micro) {
  grad_out_.resize(size_t(acts_[size_t(micro)].batch * spec_.model.seq_len * spec_.model.d_model));
  return static_cast<void*>(grad_out_.data());
}

Status CpuStage::Backward(int64_t micro, double dloss) {
  const Topology& t = *topo_;
  auto& a = acts_[size_t(micro)];
  grad_in_.resize(size_t(a.batch * spec_.model.seq_len * spec_.model.d_model));
  return stage_->Backward(a, dloss, t.last_stage() ? nullptr : grad_out_.data(),
                          t.first_stage() ? nullptr : grad_in_.data());
}

Status CpuStage::UpdateBalanceBias(double gamma, const std::vector<std::vector<int64_t>>& counts) {
  const auto& layers = stage_->moe_layers();
  if (counts.size() != layers.size()) {
    return Status::InvalidArgument("CPU stage: balance counts for " +
                                   std::to_string(counts.size()) + " MoE layers, the stage has " +
                                   std::to_string(layers.size()));
  }
  for (size_t l = 0; l < layers.size(); ++l)
    stage_->UpdateBalanceBias(layers[l], counts[l].data(), gamma);
  return Status::OK();
}

Result<GradientPack> CpuStage::PackGradients(bool routed_experts) {
  const float* grads = params_->grads().data();
  pack_.clear();
  for (const auto& run : runs_[routed_experts ? 1 : 0])
    pack_.insert(pack_.end(), grads + run.offset, grads + run.offset + run.count);
  return GradientPack{pack_.data(), pack_.size()};
}

Status CpuStage::UnpackGradients(bool routed_experts) {
  float* grads = params_->grads().data();
  size_t o = 0;
  for (const auto& run : runs_[routed_experts ? 1 : 0]) {
    std::copy_n(pack_.data() + o, run.count, grads + run.offset);
    o += size_t(run.count);
  }
  return Status::OK();
}

Result<GradientPack> CpuStage::EmbeddingGradient() {
  float* g = params_->Grad("model.embed_tokens.weight");
  if (g == nullptr) return Status::Internal("CPU stage: this stage holds no embedding");
  return GradientPack{g, size_t(spec_.model.vocab_size * spec_.model.d_model)};
}

Result<double> CpuStage::GradSquareSum(bool dense, bool routed) {
  double sq = 0;
  for (const auto& v : params_->views()) {
    if (!v.info.trainable()) continue;
    if (v.info.role == TensorRole::kEmbedding && !topo_->range.has_embedding) continue;
    if (v.info.role == TensorRole::kRoutedExpert ? routed : dense)
      sq += cpu::SumOfSquares(params_->grads().data() + v.offset, v.info.numel());
  }
  return sq;
}

Status CpuStage::ApplyStep(const cpu::AdamWStep& adam, double clip) {
  for (const auto& v : params_->views()) {
    if (!v.info.trainable()) continue;
    float* g = params_->grads().data() + v.offset;
    if (clip != 1.0) cpu::ScaleInPlace(g, v.info.numel(), float(clip));
    cpu::AdamWUpdate(params_->values().data() + v.offset, g, opt_->m.data() + v.offset,
                     opt_->v.data() + v.offset, v.info.numel(), adam, v.info.is_matrix());
  }
  return Status::OK();
}

std::string CpuStage::Describe() const {
  return "CPU, " + std::to_string(spec_.resources.threads_per_trainer) + " thread(s), " +
         std::string(ToString(spec_.train.precision)) + "; " + kernels::cpu::DnnlKernelInfo();
}

}  // namespace moerun::trainer
