#include "worker/trainer/gpu_step_runner.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cpu/optimizer.h"
#include "kernels/cuda/runtime_info.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {
namespace {

Status Cuda(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::OK();
  return Status::Internal("GPU step: " + what + ": " + cudaGetErrorString(e));
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
    nccl_.reset();
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
    auto m = model::cuda::ModelCuda<T>::Create(spec_.model, *params_, micro_seqs_, seq_, stream_,
                                               handle_, spec_.train.precision == Precision::kFp8);
    if (!m.ok()) return m.status();
    model_ = std::move(m.value());
    MOERUN_RETURN_IF_ERROR(model_->UploadMoments(opt_->m, opt_->v));
    if (topo_->data_group->size() > 1) {
      // Gradients stay on the device: NCCL over the data group, bootstrapped by it.
      auto nccl =
          comm::NcclCommunicator::Create(topo_->data_group.get(), device, o.data_plane_timeout_ms);
      if (!nccl.ok()) return nccl.status().WithContext("NCCL over the data group");
      std::unique_ptr<comm::Communicator> c = std::move(nccl.value());
      if (o.wait) c = std::make_unique<comm::TimedCommunicator>(std::move(c), o.wait);
      nccl_ = std::move(c);
    }
    return Status::OK();
  }

  Result<StepResult> Run(int64_t step, int64_t total_steps) override {
    Topology& t = *topo_;
    const ModelSpec& ms = spec_.model;
    const int64_t experts = std::max<int64_t>(ms.moe.routed_experts, 0);
    const int64_t moe_layers = ms.moe_layers();
    counts_.assign(size_t(moe_layers * experts), 0.0);
    double loss_sum = 0, balance_sum = 0;
    const double dloss = 1.0 / double(spec_.parallel.data * spec_.parallel.micro_batches);
    for (int64_t m = 0; m < t.micro_batches; ++m) {
      const int64_t global_micro = t.d * t.micro_batches + m;
      Sample(step, global_micro);
      auto loss = model_->Forward(inputs_.data(), targets_.data());
      if (!loss.ok()) return loss.status();
      loss_sum += loss.value();
      balance_sum += model_->balance_loss();
      for (int64_t l = 0; l < moe_layers; ++l) {
        const int64_t* c = model_->expert_counts(l);
        for (int64_t e = 0; e < experts; ++e) counts_[size_t(l * experts + e)] += double(c[e]);
      }
      MOERUN_RETURN_IF_ERROR(model_->Backward(dloss));
    }
    // The same bias update on every replica, from the data group's counts.
    MOERUN_RETURN_IF_ERROR(t.data_group->AllReduceSum(counts_.data(), counts_.size()));
    std::vector<std::vector<int64_t>> layer_counts(static_cast<size_t>(moe_layers));
    for (int64_t l = 0; l < moe_layers; ++l)
      for (int64_t e = 0; e < experts; ++e)
        layer_counts[size_t(l)].push_back(int64_t(counts_[size_t(l * experts + e)]));
    MOERUN_RETURN_IF_ERROR(
        model_->UpdateBalanceBias(ms.moe.balance.bias_update_speed, layer_counts));
    if (nccl_) {
      MOERUN_RETURN_IF_ERROR(nccl_->AllReduceSum(model_->grads(), size_t(model_->size())));
    }
    // Every replica now holds the summed gradients: its norm is the global one.
    StepResult r;
    r.lr = LearningRate(spec_.train.optimizer, step, total_steps);
    const OptimizerSpec& o = spec_.train.optimizer;
    const kernels::cpu::AdamWStep adam{r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step};
    auto norm = model_->Step(adam, o.grad_clip);
    if (!norm.ok()) return norm.status();
    r.grad_norm = norm.value();

    std::vector<double> m(2, 0.0);
    m[0] = loss_sum;
    m[1] = balance_sum;
    MOERUN_RETURN_IF_ERROR(t.world_comm->AllReduceSum(m.data(), m.size()));
    const double micro_total = double(spec_.parallel.data * spec_.parallel.micro_batches);
    r.loss = m[0] / micro_total;
    r.balance_loss = m[1] / micro_total;
    r.expert_load = std::move(layer_counts);  // already summed over every replica
    return r;
  }

  Result<double> Evaluate(int64_t windows) override {
    Topology& t = *topo_;
    const int64_t batches = (windows + micro_seqs_ - 1) / micro_seqs_;
    const int64_t rounds = (batches + t.data - 1) / t.data;
    double total = 0;
    inputs_.resize(size_t(micro_seqs_ * seq_));
    targets_.resize(size_t(micro_seqs_ * seq_));
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t q = round * t.data + t.d;
      if (q >= batches) break;
      const int64_t first = q * micro_seqs_, batch = std::min(micro_seqs_, windows - first);
      // A short last batch repeats its last real window; only real windows are counted.
      for (int64_t j = 0; j < micro_seqs_; ++j)
        corpus_->ValidationWindow(first + std::min(j, batch - 1), inputs_.data() + j * seq_,
                                  targets_.data() + j * seq_);
      auto loss = model_->Forward(inputs_.data(), targets_.data());
      if (!loss.ok()) return loss.status();
      auto sum = model_->LossSum(batch * seq_);
      if (!sum.ok()) return sum.status();
      total += sum.value() / double(seq_);
    }
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
    return "GPU " + std::to_string(device_) + ": " + name + ", " +
           std::string(ToString(spec_.train.precision));
  }

  Status SyncHost() override {
    return model_->DownloadState(&params_->values(), &opt_->m, &opt_->v);
  }

 private:
  void Sample(int64_t step, int64_t global_micro) {
    inputs_.resize(size_t(micro_seqs_ * seq_));
    targets_.resize(size_t(micro_seqs_ * seq_));
    for (int64_t j = 0; j < micro_seqs_; ++j)
      corpus_->SampleTrain(spec_.train.seed, step - 1, global_micro * micro_seqs_ + j,
                           inputs_.data() + j * seq_, targets_.data() + j * seq_);
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
  std::unique_ptr<comm::Communicator> nccl_;
  std::vector<int32_t> inputs_, targets_;
  std::vector<double> counts_;
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
