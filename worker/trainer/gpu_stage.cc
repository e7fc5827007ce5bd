#include "worker/trainer/gpu_stage.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/cpu/optimizer.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/runtime_info.h"
#include "worker/comm/device_communicator.h"
#include "worker/model/cuda/model_cuda.h"

namespace moerun::trainer {
namespace {

// kernels/cuda/cuda_status.h decides each error's code.
Status Cuda(cudaError_t e, const std::string& what) {
  return kernels::cuda::CudaStatus(e, "GPU step: " + what);
}

int64_t Floats(const std::vector<model::TensorRun>& runs) {
  int64_t n = 0;
  for (const auto& run : runs) n += run.count;
  return n;
}

template <typename T>
class GpuStage : public StageBackend {
 public:
  GpuStage(const JobSpec& spec, Topology* topo, model::Parameters<float>* params,
           OptimizerState* opt)
      : spec_(spec), topo_(topo), params_(params), opt_(opt) {
    seq_ = spec.model.seq_len;
    micro_seqs_ = spec.train.global_batch / (spec.parallel.data * spec.parallel.micro_batches);
  }

  ~GpuStage() override {
    model_.reset();  // frees device memory before the stream and handle go
    for (T* p : stash_) cudaFree(p);
    world_dev_.reset();
    replica_dev_.reset();
    embedding_dev_.reset();
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
    if (Status s = kernels::cuda::CublasStatus(
            cublasCreate(&handle_),
            "GPU step: starting cuBLAS on device " + std::to_string(device));
        !s.ok()) {
      handle_ = nullptr;
      return s;
    }
    // Device communicators (NCCL, or host-staged where ranks share a GPU), made in the same
    // order on every rank: the world (activations between stages), data group (dense
    // gradients), the embedding pair (first and last stage under MTP), expert group (tokens),
    // expert replica group (expert gradients).
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
    if (topo_->pipeline > 1)  // activations between stages
      MOERUN_RETURN_IF_ERROR(device_group(topo_->world_comm.get(), "stages", &world_dev_));
    MOERUN_RETURN_IF_ERROR(device_group(topo_->data_group.get(), "data group", &data_dev_));
    if (topo_->embedding_group) {  // multi-token prediction over a pipeline: the embedding pair
      MOERUN_RETURN_IF_ERROR(
          device_group(topo_->embedding_group.get(), "embedding pair", &embedding_dev_));
    }
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
    if (data_dev_ || replica_dev_) {  // one packing buffer for either kind of gradient
      const int64_t floats = std::max(Floats(model_->runs(false)), Floats(model_->runs(true)));
      MOERUN_RETURN_IF_ERROR(
          Cuda(cudaMalloc(&pack_, size_t(std::max<int64_t>(floats, 1)) * sizeof(float)),
               "gradient packing buffer"));
    }
    return model_->UploadMoments(opt_->m, opt_->v);
  }

  StageGroups groups() const override {
    // Without expert parallelism the expert replica group is the data group.
    return {world_dev_.get(), data_dev_.get(),
            topo_->expert > 1 ? replica_dev_.get() : data_dev_.get(), embedding_dev_.get()};
  }

  // Buffers are sized at creation for a micro-batch.
  int64_t fixed_sequences() const override { return micro_seqs_; }

  Status BeginStep(int64_t in_flight) override {
    // Micro-batch m's received input is kept in slot m mod (most in flight): micro-batch
    // m + slots arrives only after m's backward (1F1B: pipeline − stage; GPipe: all).
    stash_slots_ = std::max<int64_t>(in_flight, 1);
    last_forward_ = -1;
    model_->set_mtp_enabled(true);
    return Status::OK();  // ApplyStep left the gradients zero
  }

  void BeginEvaluation() override {
    last_forward_ = -1;  // it replaces the kept activations
    model_->set_mtp_enabled(false);
  }

  size_t BoundaryBytes(int64_t sequences) const override {
    return size_t(sequences * seq_ * spec_.model.d_model) * sizeof(T);
  }

  Result<void*> InputFor(int64_t micro, int64_t sequences) override {
    MOERUN_RETURN_IF_ERROR(CheckSequences(sequences));
    auto stash = Stash(micro);
    if (!stash.ok()) return stash.status();
    return static_cast<void*>(stash.value());
  }

  Result<double> Forward(int64_t micro, const int32_t* ids, const int32_t* targets,
                         int64_t sequences) override {
    MOERUN_RETURN_IF_ERROR(CheckSequences(sequences));
    if (!topo_->first_stage()) {
      auto stash = Stash(micro);
      if (!stash.ok()) return stash.status();
      MOERUN_RETURN_IF_ERROR(Cuda(Copy(model_->stage_input(), stash.value(),
                                       BoundaryBytes(sequences), cudaMemcpyDeviceToDevice),
                                  "stage input"));
    }
    auto loss = model_->Forward(ids, targets);
    if (!loss.ok()) return loss.status();
    last_forward_ = micro;
    return loss.value();
  }

  const void* Output() const override { return model_->stage_output(); }
  double balance_loss() const override { return model_->balance_loss(); }
  double mtp_loss() const override { return model_->mtp_loss(); }
  Result<GradientPack> EmbeddingGradient() override {
    float* g = model_->embedding_grad();
    if (g == nullptr) return Status::Internal("GPU step: this stage holds no embedding");
    // The communicator has its own stream (or none): the gradients must be written first.
    MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "gradients"));
    return GradientPack{g, size_t(spec_.model.vocab_size * spec_.model.d_model)};
  }
  int64_t moe_layers() const override { return model_->moe_layers(); }
  const int64_t* ExpertCounts(int64_t j) const override { return model_->expert_counts(j); }

  Result<double> SequenceLossSum(int64_t sequences) const override {
    auto sum = model_->LossSum(sequences * seq_);
    if (!sum.ok()) return sum.status();
    return sum.value() / double(seq_);
  }

  bool NeedsForwardAgain(int64_t micro) const override { return last_forward_ != micro; }

  // output_grad() is not touched by a forward.
  Result<void*> OutputGradFor(int64_t) override {
    return static_cast<void*>(model_->output_grad());
  }

  Status Backward(int64_t micro, double dloss) override {
    if (last_forward_ != micro) {
      return Status::Internal("GPU step: backward of micro-batch " + std::to_string(micro) +
                              " without its activations (the last forward was " +
                              std::to_string(last_forward_) + ")");
    }
    return model_->Backward(dloss);
  }

  const void* InputGrad() const override { return model_->input_grad(); }

  Status UpdateBalanceBias(double gamma, const std::vector<std::vector<int64_t>>& counts) override {
    return model_->UpdateBalanceBias(gamma, counts);
  }

  Result<GradientPack> PackGradients(bool routed_experts) override {
    const auto& runs = model_->runs(routed_experts);
    if (runs.size() == 1) {  // already contiguous: summed in place, once the backward is done
      // The communicator has its own stream (or none): the gradients must be written first.
      MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "gradients"));
      return GradientPack{model_->grads() + runs[0].offset, size_t(runs[0].count)};
    }
    MOERUN_RETURN_IF_ERROR(CopyRuns(runs, true));
    return GradientPack{pack_, size_t(Floats(runs))};
  }

  Status UnpackGradients(bool routed_experts) override {
    const auto& runs = model_->runs(routed_experts);
    return runs.size() == 1 ? Status::OK() : CopyRuns(runs, false);
  }

  Result<double> GradSquareSum(bool dense, bool routed) override {
    if (dense && routed) return model_->GradSquareSum();
    if (dense || routed) return model_->GradSquareSum(routed);
    return 0.0;
  }

  Status ApplyStep(const kernels::cpu::AdamWStep& adam, double clip) override {
    return model_->ApplyStep(adam, clip);
  }

  Status SyncHost() override {
    return model_->DownloadState(&params_->values(), &opt_->m, &opt_->v);
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
    for (auto* c : {world_dev_.get(), data_dev_.get(), expert_dev_.get(), replica_dev_.get(),
                    embedding_dev_.get()})
      if (c != nullptr) c->Abort(reason);
  }

 private:
  Status CheckSequences(int64_t sequences) const {
    if (sequences == micro_seqs_) return Status::OK();
    return Status::InvalidArgument("GPU step: a forward of " + std::to_string(sequences) +
                                   " sequences; the stage is sized for " +
                                   std::to_string(micro_seqs_));
  }

  // The runs' gradients into pack_ (`into_pack`) or back, finished on return: the
  // communicator has its own stream (or none).
  Status CopyRuns(const std::vector<model::TensorRun>& runs, bool into_pack) {
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
  }

  // A copy ordered after the model's work on its stream, finished on return.
  cudaError_t Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream_);
    return e != cudaSuccess ? e : cudaStreamSynchronize(stream_);
  }

  // Device memory for micro-batch m's stage input (slot m mod stash_slots_), allocated once.
  Result<T*> Stash(int64_t m) {
    const size_t slot = size_t(m % stash_slots_);
    if (stash_.size() <= slot) stash_.resize(slot + 1, nullptr);
    if (stash_[slot] == nullptr) {
      void* p = nullptr;
      MOERUN_RETURN_IF_ERROR(Cuda(cudaMalloc(&p, BoundaryBytes(micro_seqs_)), "stage input stash"));
      stash_[slot] = static_cast<T*>(p);
    }
    return stash_[slot];
  }

  const JobSpec& spec_;
  Topology* topo_;
  model::Parameters<float>* params_;
  OptimizerState* opt_;
  int64_t seq_ = 0, micro_seqs_ = 0;
  int device_ = -1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  std::unique_ptr<model::cuda::ModelCuda<T>> model_;
  // Device communicators over the world (activations between stages), the data, expert and
  // expert replica groups; null for a group of one (the world's with one stage, the last two
  // without expert parallelism).
  std::unique_ptr<comm::Communicator> world_dev_, data_dev_, expert_dev_, replica_dev_,
      embedding_dev_;       // replica d of the first and last stage (MTP over a pipeline), or null
  std::string transports_;  // which transport each group uses, for Describe
  float* pack_ = nullptr;   // device: gradients of one kind, packed for one all-reduce
  // Per micro-batch in flight on later stages: the activations received (device; kept for
  // the forward run again before the backward).
  std::vector<T*> stash_;
  int64_t stash_slots_ = 1;
  int64_t last_forward_ = -1;  // the micro-batch whose activations the model holds
};

template <typename T>
Result<std::unique_ptr<StageBackend>> Make(const JobSpec& spec, Topology* topo,
                                           model::Parameters<float>* params, OptimizerState* opt,
                                           const GpuStepOptions& o) {
  auto r = std::make_unique<GpuStage<T>>(spec, topo, params, opt);
  MOERUN_RETURN_IF_ERROR(r->Init(o));
  return Result<std::unique_ptr<StageBackend>>(std::unique_ptr<StageBackend>(std::move(r)));
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

void RegisterGpuStep() { SetLinkedGpuStep({&CheckGpuTraining, &MakeGpuStage}); }

Result<std::unique_ptr<StageBackend>> MakeGpuStage(const JobSpec& spec, Topology* topo,
                                                   model::Parameters<float>* params,
                                                   OptimizerState* opt,
                                                   const GpuStepOptions& options) {
  if (spec.train.precision != Precision::kFp32) {  // bf16, and fp8 on bf16 storage
    return Make<__nv_bfloat16>(spec, topo, params, opt, options);
  }
  return Make<float>(spec, topo, params, opt, options);
}

}  // namespace moerun::trainer
