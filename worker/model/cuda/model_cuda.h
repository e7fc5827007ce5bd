// ModelCuda: a pipeline stage of the MoE transformer (docs/architecture.md §4) on one GPU —
// optionally the embedding, decoder layers [layer_begin, layer_end) (RMSNorm, attention — MHA's
// q/k/v/o with RoPE, or MLA's low-rank projections (model_cuda_mla.cc) — dense MLP or the MoE
// layer), optionally the final norm, LM head
// and cross-entropy — forward, backward and the optimizer step. The GPU twin of ModelStage (expert
// parallelism included) plus the trainer's AdamW step, for `backend: cuda`; the whole model is the
// one-stage case. A stage without the embedding reads its input from stage_input(), one without the
// head leaves its output in stage_output(); their gradients go through the same kind of buffers.
// A head stage of a model with model.mtp.depth > 0 also runs the multi-token prediction modules
// in training forwards (model_cuda_mtp.cc), on its copy of the embedding when it has no other.
// One micro-batch's activations are kept (the last Forward's): a pipeline schedule with
// several micro-batches in flight runs a micro-batch's forward again before its backward.
// Weights: fp32 master copy, gradients and AdamW moments on the device in the flat layout of
// Parameters<float> (same tensor names and offsets, so checkpoints need no translation);
// compute copy in T (float: the master itself; bf16: refreshed after every step).
// Sizes are fixed at Create (batch × seq tokens). Work goes on `stream`; Forward and Step
// synchronize to return their scalars. Not thread-safe.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"
#include "kernels/cpu/optimizer.h"
#include "worker/model/cuda/fp8_linear.h"
#include "worker/model/cuda/moe_layer_cuda.h"
#include "worker/model/model_stage.h"
#include "worker/model/parameters.h"

namespace moerun::model::cuda {

template <typename T>
class ModelCuda {
 public:
  // `params` holds the stage's tensors (StageTensors order); its values are uploaded. A range
  // holding some of the routed experts needs `ep` (experts_per_rank of them, exchanged over
  // ep.group: worker/model/cuda/moe_layer_cuda.h).
  // fp8 (bf16 storage only): the decoder's linear layers — attention projections, dense MLPs,
  // routed and shared experts — run DeepSeek-V3's fp8 recipe (worker/model/cuda/fp8_linear.h),
  // their weights quantized from the fp32 masters once per Step (at the next Forward);
  // the router, the LM head and everything else stay bf16/fp32, as on the CPU. It needs
  // batch·seq and every feature size (d_model, heads·head dim, ffn_hidden, expert_hidden,
  // the shared experts' hidden size) to be multiples of 16.
  static Result<std::unique_ptr<ModelCuda>> Create(const ModelSpec& spec, const StageRange& range,
                                                   const Parameters<float>& params, int64_t batch,
                                                   int64_t seq, cudaStream_t stream,
                                                   cublasHandle_t handle, bool fp8 = false,
                                                   ExpertGroupCuda ep = {});
  // The whole model as one stage.
  static Result<std::unique_ptr<ModelCuda>> Create(const ModelSpec& spec,
                                                   const Parameters<float>& params, int64_t batch,
                                                   int64_t seq, cudaStream_t stream,
                                                   cublasHandle_t handle, bool fp8 = false);
  ~ModelCuda();

  // Input: `ids` (host, batch·seq tokens) with the embedding, else stage_input(). With the
  // head, returns the mean cross-entropy of `targets` (host, batch·seq); else writes
  // stage_output() and returns 0. Either pointer may be null where the stage has no use for it.
  Result<double> Forward(const int32_t* ids, const int32_t* targets);
  // Gradients (+=) of the loss (with the head) or of stage_output() given output_grad()
  // (without it), and of the MoE layers' balance losses, all scaled by dloss. Without the
  // embedding, input_grad() then holds the gradient of stage_input(). Reads the last Forward's
  // activations.
  Status Backward(double dloss);
  // Global-norm clipping (grad_clip 0: off), AdamW on every trainable tensor (weight decay on
  // matrices), gradients zeroed, compute copy refreshed. Returns the norm before clipping.
  // The same as ApplyStep(adam, ClipFactor(sqrt(GradSquareSum()), grad_clip)).
  Result<double> Step(const kernels::cpu::AdamWStep& adam, double grad_clip);
  // Σ of the squared gradients of this stage (its share of a pipeline's global norm); of its
  // routed experts' only (`routed_experts` true) or of everything else (false).
  Result<double> GradSquareSum();
  Result<double> GradSquareSum(bool routed_experts);
  // The stage's trainable tensors as runs of grads() offsets, routed experts' or the rest's
  // (TrainableRuns of its tensors, made once).
  const std::vector<TensorRun>& runs(bool routed_experts) const {
    return runs_[routed_experts ? 1 : 0];
  }
  // Gradients scaled by `clip` (1: untouched), AdamW, gradients zeroed, compute copy refreshed.
  Status ApplyStep(const kernels::cpu::AdamWStep& adam, double clip);

  // Device buffers of [batch·seq, d_model] values in T, for stages cut out of a pipeline.
  T* stage_input() const { return xs_.front(); }        // Forward's input without embedding
  const T* stage_output() const { return xs_.back(); }  // Forward's output without head
  T* output_grad() const { return dh_; }                // Backward's input without head
  const T* input_grad() const { return dh_; }           // Backward's output without embedding
  const StageRange& range() const { return range_; }
  // MoE layers of this stage, the MTP modules' blocks last (global indices n_layers + k − 1).
  int64_t moe_layers() const;
  // Aux-loss-free balancing from the last Forward's counts: b_i += γ · sign(mean − load_i).
  Status UpdateBalanceBias(double gamma);
  // The same from given counts: counts[j] holds MoE layer j's tokens per expert (j counts
  // from the stage's first MoE layer), e.g. summed over micro-batches and data-parallel
  // replicas.
  Status UpdateBalanceBias(double gamma, const std::vector<std::vector<int64_t>>& counts);

  // The sum of the stage's MoE layers' balance losses in the last Forward (the MTP modules'
  // blocks included when they ran).
  double balance_loss() const;
  // Multi-token prediction: runs in forwards while enabled (training; evaluation turns it off),
  // on a head stage of a model with model.mtp.depth > 0, as on the CPU (model_stage.h).
  void set_mtp_enabled(bool enabled) { mtp_enabled_ = enabled; }
  // The last Forward's mean over the modules of their mean cross-entropy (0: none ran).
  double mtp_loss() const { return mtp_ran_ ? mtp_loss_ : 0.0; }
  // The embedding's gradient (device, fp32, vocab × d_model), or null on a stage without it.
  float* embedding_grad() const { return G("model.embed_tokens.weight"); }
  // Tokens per routed expert in MoE layer j (from the stage's first MoE layer) in the last
  // Forward; host memory, valid until the next Forward.
  const int64_t* expert_counts(int64_t j) const;
  // Σ of the last Forward's per-token cross-entropies over its first `tokens` tokens (a
  // partly filled batch: the rest are padding, and tokens never see other sequences). Needs
  // the head.
  Result<double> LossSum(int64_t tokens) const;

  // Master weights and gradients, in Parameters<float> layout.
  Status Download(std::vector<float>* values, std::vector<float>* grads) const;
  // Master weights and both AdamW moments (for a checkpoint), and the moments back (after
  // restoring one; the weights come with Create).
  Status DownloadState(std::vector<float>* values, std::vector<float>* m,
                       std::vector<float>* v) const;
  Status UploadMoments(const std::vector<float>& m, const std::vector<float>& v);
  // The gradient buffer (device, fp32, Parameters<float> layout, size() floats): the data
  // plane sums it over replicas between Backward and Step.
  float* grads() const { return grads_; }
  int64_t size() const { return size_; }

 private:
  struct Layer;
  ModelCuda() = default;
  Status Allocate(const Parameters<float>& params);
  struct MtpModule;
  int64_t MainMoeLayers() const;  // the stage's MoE layers before the MTP modules
  // Layer l (a global index; an MTP module k's block is n_layers + k − 1) and its activations.
  Layer& LayerAt(int64_t l) const;
  // Layer l on batch_ sequences of seq_now_ tokens: y = layer(x); its backward turns dh_
  // (d(y)) into d(x), reading x again.
  Status LayerForward(int64_t l, const T* x, T* y);
  Status LayerBackward(int64_t l, const T* x, double dloss);
  // A layer's activations and bound weights (`l` may be an MTP block).
  Status AllocateLayer(int64_t l, Layer& layer);
  // The multi-token prediction modules after the head (model_cuda_mtp.cc), the CPU's order:
  // buffers; forward from fnorm_ and the host targets; backward adding the gradient of fnorm_
  // to dfnorm_.
  Status AllocateMtp();
  Status MtpForward(const int32_t* targets);
  Status MtpBackward(double dloss);
  // MLA's share of them (model_cuda_mla.cc): buffers, the linears fp8 quantizes, and the
  // attention half — forward adds o_proj's output to `mid`, backward writes dn_ (=) from dh_.
  void AllocateMla(Layer& layer);
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> MlaLinears() const;
  Status MlaForward(int64_t l, Layer& a);
  Status MlaBackward(int64_t l, Layer& a);
  // The rest of a layer after attention: y = mid + FFN(norm2(mid)); and the input norm's
  // backward, dh_ += d(x) from dn_.
  Status FfnForward(int64_t l, Layer& a, T* y);
  Status InputNormBackward(int64_t l, Layer& a, const T* x);
  // Layer l's linear `name` ("self_attn.q_proj.weight", ...): y (=, or += with accumulate)
  // = x · Wᵀ, and its backward; in T through cuBLAS, or in fp8.
  Status Linear(int64_t l, const std::string& name, const T* x, T* y, int64_t in, int64_t out,
                bool accumulate = false);
  Status LinearGrad(int64_t l, const std::string& name, const T* dy, const T* x, T* dx, int64_t in,
                    int64_t out, bool accumulate_dx);
  // Compute copy (T) and gradient (fp32) of a tensor by name; null when absent.
  T* W(const std::string& name) const;
  float* G(const std::string& name) const;
  float* Master(const std::string& name) const;
  template <typename V>
  V* Alloc(int64_t count);

  ModelSpec spec_;
  StageRange range_;
  ExpertGroupCuda ep_;
  int64_t batch_ = 0, seq_ = 0;
  int64_t seq_now_ =
      0;  // sequence length of the layer being run: seq_, or seq_ − k in MTP module k
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  std::vector<void*> owned_;
  bool out_of_memory_ = false;  // an Alloc failed
  std::vector<ParameterView> views_;
  std::vector<TensorRun> runs_[2];  // [routed experts?]
  std::unordered_map<std::string, int64_t> offset_;
  int64_t size_ = 0;
  float *master_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  T* compute_ = nullptr;  // == master_ when T is float
  int32_t *ids_ = nullptr, *targets_ = nullptr;
  // Inputs [N, D] of the stage's layers, then the last layer's output (the final norm's input).
  std::vector<T*> xs_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Fp8Linear> fp8_;  // null unless Create(..., fp8 = true)
  bool fp8_stale_ = true;           // the fp8 weight copies lag the masters (until a Forward)
  T *fnorm_ = nullptr, *logits_ = nullptr, *dlogits_ = nullptr;
  float *frstd_ = nullptr, *row_loss_ = nullptr;
  double *loss_ = nullptr, *partial_ = nullptr, *norm_ = nullptr;
  // Backward scratch.
  T *dh_ = nullptr, *dn_ = nullptr, *dx_ = nullptr, *datt_ = nullptr, *dq_ = nullptr,
    *dk_ = nullptr, *dv_ = nullptr, *da_ = nullptr, *dg_ = nullptr, *du_ = nullptr;
  // MLA: kv_a_proj's output (forward) and its gradient (backward) [N, kr + dr]; the gradients
  // of a normed latent and of its norm's input [N, max(kr, qr)]. dk_ holds d(kv), dv_ d(k_pe).
  T *kva_ = nullptr, *dlat_ = nullptr, *dlat_in_ = nullptr;
  // Multi-token prediction (head stage, model.mtp.depth > 0): the modules, their switch and
  // the last forward's mean MTP cross-entropy; scratch: d(fnorm_) [N, D], d([enorm; hnorm])
  // [N, 2D], the gradient of a module's hidden input [N, D].
  std::vector<std::unique_ptr<MtpModule>> mtp_;
  std::vector<std::unique_ptr<Layer>> mtp_layers_;
  bool mtp_enabled_ = true, mtp_ran_ = false;
  bool mtp_fp8_stale_ = true;  // the MTP layers' fp8 weight copies lag the masters
  double mtp_loss_ = 0;
  T *dfnorm_ = nullptr, *dcat_ = nullptr, *dprev_ = nullptr;
  std::vector<int64_t> no_counts_;  // an MTP block's expert counts when no module ran
  // Trainable runs counted in the global norm: runs_ less the last stage's copy of the
  // embedding (the first stage counts it).
  std::vector<TensorRun> norm_runs_[2];
  float* ds_ = nullptr;
};

}  // namespace moerun::model::cuda
