// CpuStage: the StageBackend (worker/trainer/stage_backend.h) of `backend: cpu` — the rank's
// ModelStage over the CPU kernels, its weights, gradients and AdamW moments in host memory
// (the same memory a checkpoint saves, so SyncHost has nothing to do). Activations are kept
// per micro-batch in flight, so no forward runs twice; a forward may run any number of
// sequences, none included. Data-plane failures inside the MoE layers come back as
// themselves (TimedOut, Aborted, Unavailable). Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "worker/model/model_stage.h"
#include "worker/model/parameters.h"
#include "worker/trainer/stage_backend.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"

namespace moerun::trainer {

class CpuStage : public StageBackend {
 public:
  // The stage of `topo` (with its share of the experts when topo->expert > 1) over `params`
  // and `opt`, which hold the state to start from. All pointers outlive the stage.
  CpuStage(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
           OptimizerState* opt);

  StageGroups groups() const override;
  int64_t fixed_sequences() const override { return 0; }
  Status BeginStep(int64_t in_flight) override;
  void BeginEvaluation() override;
  size_t BoundaryBytes(int64_t sequences) const override;
  Result<void*> InputFor(int64_t micro, int64_t sequences) override;
  Result<double> Forward(int64_t micro, const int32_t* ids, const int32_t* targets,
                         int64_t sequences) override;
  const void* Output() const override { return hidden_out_.data(); }
  double balance_loss() const override { return last_balance_loss_; }
  double mtp_loss() const override { return last_mtp_loss_; }
  int64_t moe_layers() const override { return int64_t(stage_->moe_layers().size()); }
  const int64_t* ExpertCounts(int64_t j) const override {
    return stage_->expert_counts()[size_t(j)].data();
  }
  Result<double> SequenceLossSum(int64_t sequences) const override;
  bool NeedsForwardAgain(int64_t) const override { return false; }
  Result<void*> OutputGradFor(int64_t micro) override;
  Status Backward(int64_t micro, double dloss) override;
  const void* InputGrad() const override { return grad_in_.data(); }
  Status UpdateBalanceBias(double gamma, const std::vector<std::vector<int64_t>>& counts) override;
  Result<GradientPack> PackGradients(bool routed_experts) override;
  Status UnpackGradients(bool routed_experts) override;
  Result<GradientPack> EmbeddingGradient() override;
  Result<double> GradSquareSum(bool dense, bool routed) override;
  Status ApplyStep(const kernels::cpu::AdamWStep& adam, double clip) override;
  Status SyncHost() override { return Status::OK(); }
  std::string Describe() const override;
  void Abort(const std::string&) override {}  // every communicator is the topology's

 private:
  const JobSpec& spec_;
  Topology* topo_;
  model::Parameters<float>* params_;
  OptimizerState* opt_;
  std::unique_ptr<model::ModelStage<float>> stage_;
  std::vector<model::StageActivations<float>> acts_;  // per micro-batch in flight
  // The boundary tensors: received input, output, received output gradient, input gradient.
  std::vector<float> hidden_in_, hidden_out_, grad_out_, grad_in_;
  std::vector<float> pack_;
  // Trainable gradients as runs of grads() offsets: [0] all but routed experts, [1] routed
  // experts (the layout never changes, so they are made once).
  std::vector<model::TensorRun> runs_[2];
  double last_loss_ = 0, last_balance_loss_ = 0, last_mtp_loss_ = 0;
  int64_t last_sequences_ = 0;
};

}  // namespace moerun::trainer
