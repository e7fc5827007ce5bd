#include "worker/trainer/gpu_step_runner.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/optimizer.h"
#include "kernels/cuda/runtime_info.h"
#include "worker/comm/device_communicator.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/trainer/pipeline_schedule.h"
#include "worker/trainer/stage_link.h"
#include "worker/trainer/step_metrics.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {
namespace {

Status Cuda(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::OK();
  return Status::Internal("GPU step: " + what + ": " + cudaGetErrorString(e));
}

int64_t Floats(const std::vector<model::TensorRun>& runs) {
  int64_t n = 0;
  for (const auto& run : runs) n += run.count;
  return n;
}

template <typename T>
class GpuStepRunner : public StepEngine {
 public:
  GpuStepRunner(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
                OptimizerState* opt, const data::Corpus* corpus)
      : spec_(spec), topo_(topo), params_(params), opt_(opt), corpus_(corpus) {
    seq_ = spec.model.seq_len;
    micro_seqs_ = spec.train.global_batch / (spec.parallel.data * spec.parallel.micro_batches);
  }

  ~GpuStepRunner() override {
    model_.reset();  // frees device memory before the stream and handle go
    for (T* p : stash_) cudaFree(p);
    link_.reset();
    world_dev_.reset();
    replica_dev_.reset();
    expert_dev_.reset();
    data_dev_.reset();
    if (pack_ != nullptr) cudaFree(pack_);
    if (handle_) cublasDestroy(handle_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status Init(const GpuStepOptions& o) {
    int devices = 0;
    MOERUN_RETURN_IF_ERROR(Cuda(cudaGetDeviceCount(&devices), "counting GPUs"));
    const int device = o.device >= 0 ? o.device : topo_->rank % std::max(devices, 1);
    if (device >= devices) {
      return Status::InvalidArgument(
          "GPU step: device " + std::to_string(device) + " asked for, but this host has " +
          std::to_string(devices) + " visible GPU(s): give the worker daemon --devices " +
          "no more than its GPUs, and the job devices_per_worker no more than that");
    }
    device_ = device;
    MOERUN_RETURN_IF_ERROR(
        Cuda(cudaSetDevice(device), "selecting device " + std::to_string(device)));
    // Every kernel, GEMM and copy of the model goes on this one stream.
    MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamCreate(&stream_), "creating a stream"));
    if (cublasCreate(&handle_) != CUBLAS_STATUS_SUCCESS) {
      handle_ = nullptr;
      return Status::Internal("GPU step: cuBLAS could not start on device " +
                              std::to_string(device));
    }
    // Device communicators (NCCL, or host-staged where ranks share a GPU), made in the same
    // order on every rank: the world (activations between stages), data group (dense
    // gradients), expert group (tokens), expert replica group (expert gradients).
    auto device_group = [&](comm::Communicator* host, const char* what,
                            std::unique_ptr<comm::Communicator>* out) -> Status {
      if (host->size() <= 1) return Status::OK();
      std::string transport;
      auto c = comm::MakeDeviceCommunicator(host, device, o.data_plane_timeout_ms, o.wait, what,
                                            &transport);
      if (!c.ok()) return c.status();
      *out = std::move(c.value());
      transports_ += std::string(transports_.empty() ? "" : ", ") + what + " over " + transport;
      return Status::OK();
    };
    if (topo_->pipeline > 1) {  // activations between stages
      MOERUN_RETURN_IF_ERROR(device_group(topo_->world_comm.get(), "stages", &world_dev_));
      link_ = std::make_unique<StageLink>(world_dev_.get());
    }
    MOERUN_RETURN_IF_ERROR(device_group(topo_->data_group.get(), "data group", &data_dev_));
    if (topo_->expert > 1) {
      MOERUN_RETURN_IF_ERROR(device_group(topo_->expert_group.get(), "expert group", &expert_dev_));
      MOERUN_RETURN_IF_ERROR(
          device_group(topo_->replica_group.get(), "expert replica group", &replica_dev_));
    }
    model::cuda::ExpertGroupCuda ep;
    if (expert_dev_) ep = {expert_dev_.get(), spec_.model.moe.routed_experts / topo_->expert};
    auto m = model::cuda::ModelCuda<T>::Create(spec_.model, topo_->range, *params_, micro_seqs_,
                                               seq_, stream_, handle_,
                                               spec_.train.precision == Precision::kFp8, ep);
    if (!m.ok()) return m.status();
    model_ = std::move(m.value());
    if (expert_dev_) {  // one packing buffer for either kind of gradient (SyncGradients)
      const int64_t floats = std::max(Floats(model_->runs(false)), Floats(model_->runs(true)));
      MOERUN_RETURN_IF_ERROR(
          Cuda(cudaMalloc(&pack_, size_t(std::max<int64_t>(floats, 1)) * sizeof(float)),
               "gradient packing buffer"));
    }
    return model_->UploadMoments(opt_->m, opt_->v);
  }

  Result<StepResult> Run(int64_t step, int64_t total_steps) override {
    Topology& t = *topo_;
    const ModelSpec& ms = spec_.model;
    const int64_t experts = std::max<int64_t>(ms.moe.routed_experts, 0);
    const int64_t stage_moe = model_->moe_layers();
    counts_.assign(size_t(stage_moe * experts), 0.0);
    loss_sum_ = balance_sum_ = 0;
    const int64_t micro = t.micro_batches;
    inputs_.resize(size_t(micro));
    targets_.resize(size_t(micro));
    last_forward_ = -1;
    const double dloss = 1.0 / double(spec_.parallel.data * spec_.parallel.micro_batches);
    const auto ops = PipelineOps(spec_.parallel.schedule, t.pipeline, t.stage, micro);
    // Micro-batch m's received input is kept in slot m mod (most in flight): micro-batch
    // m + slots arrives only after m's backward (1F1B: pipeline − stage; GPipe: all).
    stash_slots_ = std::max<int64_t>(MicroBatchesInFlight(ops), 1);
    for (const PipelineOp& op : ops) {
      if (op.forward) {
        MOERUN_RETURN_IF_ERROR(Forward(op.micro, step, t.d * micro + op.micro));
      } else {
        MOERUN_RETURN_IF_ERROR(Backward(op.micro, dloss));
      }
    }
    if (link_) MOERUN_RETURN_IF_ERROR(link_->Flush());
    // The same bias update on every replica of the stage, from the data group's counts.
    MOERUN_RETURN_IF_ERROR(t.data_group->AllReduceSum(counts_.data(), counts_.size()));
    std::vector<std::vector<int64_t>> layer_counts(static_cast<size_t>(stage_moe));
    for (int64_t l = 0; l < stage_moe; ++l)
      for (int64_t e = 0; e < experts; ++e)
        layer_counts[size_t(l)].push_back(int64_t(counts_[size_t(l * experts + e)]));
    MOERUN_RETURN_IF_ERROR(
        model_->UpdateBalanceBias(ms.moe.balance.bias_update_speed, layer_counts));
    MOERUN_RETURN_IF_ERROR(SyncGradients());
    // Every replica of a stage now holds its summed gradients: each parameter adds to the
    // global norm once, dense ones from replica 0, experts from the first expert group.
    double global_sq = 0;
    if (t.expert > 1) {
      auto dense = model_->GradSquareSum(false), routed = model_->GradSquareSum(true);
      if (!dense.ok()) return dense.status();
      if (!routed.ok()) return routed.status();
      global_sq = (t.d == 0 ? dense.value() : 0.0) + (t.d < t.expert ? routed.value() : 0.0);
    } else {
      auto sq = model_->GradSquareSum();
      if (!sq.ok()) return sq.status();
      global_sq = t.d == 0 ? sq.value() : 0.0;
    }
    MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&global_sq, 1));
    StepResult r;
    r.grad_norm = std::sqrt(global_sq);
    r.lr = LearningRate(spec_.train.optimizer, step, total_steps);
    const OptimizerSpec& o = spec_.train.optimizer;
    const kernels::cpu::AdamWStep adam{r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step};
    MOERUN_RETURN_IF_ERROR(
        model_->ApplyStep(adam, kernels::cpu::ClipFactor(r.grad_norm, o.grad_clip)));

    // The stage's MoE layers are its last ones.
    MOERUN_RETURN_IF_ERROR(GatherStepMetrics(spec_, t, loss_sum_, balance_sum_, counts_,
                                             t.range.layer_end - stage_moe - ms.dense_layers, &r));
    return r;
  }

  Result<double> Evaluate(int64_t windows) override {
    Topology& t = *topo_;
    const int64_t batches = (windows + micro_seqs_ - 1) / micro_seqs_;
    const int64_t rounds = (batches + t.data - 1) / t.data;
    const int64_t n = micro_seqs_ * seq_;
    double total = 0;
    inputs_.resize(1);
    targets_.resize(1);
    inputs_[0].resize(size_t(n));
    targets_[0].resize(size_t(n));
    last_forward_ = -1;  // evaluation replaces the kept activations
    // Every replica runs the same number of forwards (past the end, the last batch again,
    // not counted), because the expert groups' exchanges need all their members.
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t q = round * t.data + t.d;
      const bool counted = q < batches;
      const int64_t first = std::min(q, batches - 1) * micro_seqs_;
      const int64_t batch = std::min(micro_seqs_, windows - first);
      // A short last batch repeats its last real window; only real windows are counted.
      if (t.first_stage() || t.last_stage()) {
        for (int64_t j = 0; j < micro_seqs_; ++j)
          corpus_->ValidationWindow(first + std::min(j, batch - 1), inputs_[0].data() + j * seq_,
                                    targets_[0].data() + j * seq_);
      }
      const uint32_t tag = kEvalTagBase + ForwardTag(q);
      if (link_) {
        MOERUN_RETURN_IF_ERROR(
            t.first_stage() ? link_->Flush()
                            : link_->Recv(t.prev, tag, model_->stage_input(), HiddenBytes()));
      }
      auto loss = model_->Forward(inputs_[0].data(), targets_[0].data());
      if (!loss.ok()) return loss.status();
      if (!t.last_stage()) {
        MOERUN_RETURN_IF_ERROR(link_->Send(t.next, tag, model_->stage_output(), HiddenBytes()));
        continue;
      }
      if (!counted) continue;
      auto sum = model_->LossSum(batch * seq_);
      if (!sum.ok()) return sum.status();
      total += sum.value() / double(seq_);
    }
    if (link_) MOERUN_RETURN_IF_ERROR(link_->Flush());
    MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(&total, 1));
    return total / double(windows);
  }

  Result<bool> AnyRank(bool local) override {
    double v = local ? 1.0 : 0.0;
    MOERUN_RETURN_IF_ERROR(topo_->world_comm->AllReduceSum(&v, 1));
    return v > 0;
  }

  std::string Describe() const override {
    cudaDeviceProp prop{};
    const std::string name =
        cudaGetDeviceProperties(&prop, device_) == cudaSuccess ? prop.name : "unknown";
    std::string where = "GPU " + std::to_string(device_) + ": " + name + ", " +
                        std::string(ToString(spec_.train.precision));
    if (!transports_.empty()) where += "; " + transports_;
    if (topo_->pipeline > 1) {
      where += ", stage " + std::to_string(topo_->stage) + " of " +
               std::to_string(topo_->pipeline) +
               " (each micro-batch's forward runs again before its backward on all but the last "
               "stage)";
    }
    return where;
  }

  void Abort(const std::string& reason) override {
    for (auto* c : {world_dev_.get(), data_dev_.get(), expert_dev_.get(), replica_dev_.get()})
      if (c != nullptr) c->Abort(reason);
  }

  Status SyncHost() override {
    return model_->DownloadState(&params_->values(), &opt_->m, &opt_->v);
  }

 private:
  // Dense gradients over the data group; with expert parallelism, routed experts' over the
  // expert replica group instead (each packed into one buffer: one all-reduce per group).
  Status SyncGradients() {
    if (!expert_dev_) {
      if (!data_dev_) return Status::OK();
      return data_dev_->AllReduceSum(model_->grads(), size_t(model_->size()));
    }
    for (bool experts : {false, true}) {
      comm::Communicator* g = experts ? replica_dev_.get() : data_dev_.get();
      if (g == nullptr) continue;  // a group of one
      const auto& runs = model_->runs(experts);
      auto copy_runs = [&](bool into_pack) -> Status {
        int64_t o = 0;
        for (const model::TensorRun& run : runs) {
          float* dev = model_->grads() + run.offset;
          MOERUN_RETURN_IF_ERROR(Cuda(
              cudaMemcpyAsync(into_pack ? pack_ + o : dev, into_pack ? dev : pack_ + o,
                              size_t(run.count) * sizeof(float), cudaMemcpyDeviceToDevice, stream_),
              "gradient packing"));
          o += run.count;
        }
        return Cuda(cudaStreamSynchronize(stream_), "gradient packing");
      };
      MOERUN_RETURN_IF_ERROR(copy_runs(true));
      MOERUN_RETURN_IF_ERROR(g->AllReduceSum(pack_, size_t(Floats(runs))));
      MOERUN_RETURN_IF_ERROR(copy_runs(false));
    }
    return Status::OK();
  }

  // A copy ordered after the model's work on its stream, finished on return.
  cudaError_t Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream_);
    return e != cudaSuccess ? e : cudaStreamSynchronize(stream_);
  }

  size_t HiddenBytes() const {
    return size_t(micro_seqs_ * seq_ * spec_.model.d_model) * sizeof(T);
  }

  // Micro-batch m's forward: its tokens (first and last stage) or the previous stage's
  // activations, the stage, its output to the next stage. `again`: the same forward once
  // more before its backward (its inputs kept, nothing received, sent or counted).
  Status Forward(int64_t m, int64_t step, int64_t global_micro, bool again = false) {
    Topology& t = *topo_;
    const size_t n = size_t(micro_seqs_ * seq_);
    if (!again && (t.first_stage() || t.last_stage())) {
      inputs_[size_t(m)].resize(n);
      targets_[size_t(m)].resize(n);
      for (int64_t j = 0; j < micro_seqs_; ++j)
        corpus_->SampleTrain(spec_.train.seed, step - 1, global_micro * micro_seqs_ + j,
                             inputs_[size_t(m)].data() + j * seq_,
                             targets_[size_t(m)].data() + j * seq_);
    }
    if (link_ && !again) {  // the op starts with its receive (or Flush), before any compute
      if (t.first_stage()) {
        MOERUN_RETURN_IF_ERROR(link_->Flush());
      } else {
        auto stash = Stash(m);  // kept for the forward run again before the backward
        if (!stash.ok()) return stash.status();
        MOERUN_RETURN_IF_ERROR(link_->Recv(t.prev, ForwardTag(m), stash.value(), HiddenBytes()));
      }
    }
    if (!t.first_stage()) {
      auto stash = Stash(m);
      if (!stash.ok()) return stash.status();
      MOERUN_RETURN_IF_ERROR(
          Cuda(Copy(model_->stage_input(), stash.value(), HiddenBytes(), cudaMemcpyDeviceToDevice),
               "stage input"));
    }
    auto loss = model_->Forward(inputs_[size_t(m)].data(), targets_[size_t(m)].data());
    if (!loss.ok()) return loss.status();
    last_forward_ = m;
    if (again) return Status::OK();
    if (t.last_stage()) loss_sum_ += loss.value();
    balance_sum_ += model_->balance_loss();
    const int64_t experts = std::max<int64_t>(spec_.model.moe.routed_experts, 0);
    for (int64_t l = 0; l < model_->moe_layers(); ++l) {
      const int64_t* c = model_->expert_counts(l);
      for (int64_t e = 0; e < experts; ++e) counts_[size_t(l * experts + e)] += double(c[e]);
    }
    // Held by the link until the next op's receive (or Flush); nothing writes stage_output()
    // before either.
    if (!t.last_stage())
      MOERUN_RETURN_IF_ERROR(
          link_->Send(t.next, ForwardTag(m), model_->stage_output(), HiddenBytes()));
    return Status::OK();
  }

  // Micro-batch m's backward. Unless m was the last forward: the held send goes out first (a
  // neighbour may be waiting for it), then m's forward runs again while the next stage
  // computes the gradient this waits for. Then that gradient (paired with a held send to
  // the same stage), then the backward.
  Status Backward(int64_t m, double dloss) {
    Topology& t = *topo_;
    if (last_forward_ != m) {
      if (link_) MOERUN_RETURN_IF_ERROR(link_->Flush());
      MOERUN_RETURN_IF_ERROR(Forward(m, 0, 0, true));
    }
    if (link_) {
      if (t.last_stage()) {
        MOERUN_RETURN_IF_ERROR(link_->Flush());
      } else {  // output_grad() is not touched by a forward
        MOERUN_RETURN_IF_ERROR(
            link_->Recv(t.next, BackwardTag(m), model_->output_grad(), HiddenBytes()));
      }
    }
    MOERUN_RETURN_IF_ERROR(model_->Backward(dloss));
    if (!t.first_stage())
      MOERUN_RETURN_IF_ERROR(
          link_->Send(t.prev, BackwardTag(m), model_->input_grad(), HiddenBytes()));
    return Status::OK();
  }

  // Device memory for micro-batch m's stage input (slot m mod stash_slots_), allocated once.
  Result<T*> Stash(int64_t m) {
    const size_t slot = size_t(m % stash_slots_);
    if (stash_.size() <= slot) stash_.resize(slot + 1, nullptr);
    if (stash_[slot] == nullptr) {
      void* p = nullptr;
      MOERUN_RETURN_IF_ERROR(Cuda(cudaMalloc(&p, HiddenBytes()), "stage input stash"));
      stash_[slot] = static_cast<T*>(p);
    }
    return stash_[slot];
  }

  const JobSpec& spec_;
  Topology* topo_;
  model::Parameters<float>* params_;
  OptimizerState* opt_;
  const data::Corpus* corpus_;
  int64_t seq_ = 0, micro_seqs_ = 0;
  int device_ = -1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  std::unique_ptr<model::cuda::ModelCuda<T>> model_;
  // Device communicators over the data, expert and expert replica groups; null for a group of
  // one (and the last two without expert parallelism).
  std::unique_ptr<comm::Communicator> data_dev_, expert_dev_, replica_dev_;
  std::string transports_;  // which transport each group uses, for Describe
  float* pack_ = nullptr;   // device: gradients of one kind, packed for one all-reduce
  // Per micro-batch in flight: tokens (first and last stage) and, on later stages, the
  // activations received (device; kept for the forward run again before the backward).
  std::vector<std::vector<int32_t>> inputs_, targets_;
  std::vector<T*> stash_;
  int64_t stash_slots_ = 1;
  // Stages: a device communicator over the world (NCCL, or host-staged where ranks share a
  // GPU) and the link that pairs its sends and receives; null with one stage.
  std::unique_ptr<comm::Communicator> world_dev_;
  std::unique_ptr<StageLink> link_;
  std::vector<double> counts_;  // the stage's MoE layers × experts, this step
  double loss_sum_ = 0, balance_sum_ = 0;
  int64_t last_forward_ = -1;  // the micro-batch whose activations the model holds
};

template <typename T>
Result<std::unique_ptr<StepEngine>> Make(const JobSpec& spec, Topology* topo,
                                         model::Parameters<float>* params, OptimizerState* opt,
                                         const data::Corpus* corpus, const GpuStepOptions& o) {
  auto r = std::make_unique<GpuStepRunner<T>>(spec, topo, params, opt, corpus);
  MOERUN_RETURN_IF_ERROR(r->Init(o));
  return Result<std::unique_ptr<StepEngine>>(std::unique_ptr<StepEngine>(std::move(r)));
}

}  // namespace

Status CheckGpuTraining(const JobSpec& spec) {
  const std::string prefix = "resources.backend: cuda: ";
  const kernels::cuda::RuntimeInfo info = kernels::cuda::QueryRuntimeInfo();
  const std::string why = info.NoDeviceReason();
  if (!why.empty()) {
    return Status::Unimplemented(prefix + "no usable GPU on this machine (" + why +
                                 "); run the job where its daemons have GPUs, or use backend: cpu");
  }
  if (spec.train.precision == Precision::kFp8 && info.device0_sm / 10 != 9) {
    return Status::Unimplemented(
        prefix + "fp8 needs a Hopper GPU (sm_90): cuBLASLt's 1x128 and 128x128 block scaling " +
        "exists there only, and this GPU is sm_" + std::to_string(info.device0_sm) +
        "; use train.precision: bf16");
  }
  return Status::OK();
}

void RegisterGpuStep() { SetLinkedGpuStep({&CheckGpuTraining, &MakeGpuStepRunner}); }

Result<std::unique_ptr<StepEngine>> MakeGpuStepRunner(const JobSpec& spec, Topology* topo,
                                                      model::Parameters<float>* params,
                                                      OptimizerState* opt,
                                                      const data::Corpus* corpus,
                                                      const GpuStepOptions& options) {
  if (spec.train.precision != Precision::kFp32) {  // bf16, and fp8 on bf16 storage
    return Make<__nv_bfloat16>(spec, topo, params, opt, corpus, options);
  }
  return Make<float>(spec, topo, params, opt, corpus, options);
}

}  // namespace moerun::trainer
