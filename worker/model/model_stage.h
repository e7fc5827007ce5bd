// A contiguous range of the MoE transformer (docs/architecture.md §4): optionally the embedding,
// layers [layer_begin, layer_end), optionally the final norm and LM head. The whole model is one
// stage; pipeline parallelism cuts it into several. Forward and backward on the CPU kernels.
//
// Activations of one micro-batch live in a StageActivations, so several micro-batches can be
// in flight (pipeline schedules). Parameter gradients accumulate into Parameters::grads().
// Instantiated for float (training) and double (gradient tests). Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "worker/model/ffn_block.h"
#include "worker/model/mla_block.h"
#include "worker/model/parameters.h"

namespace moerun::model {

struct StageRange {
  int64_t layer_begin = 0, layer_end = 0;
  bool has_embedding = true, has_head = true;
  // Routed experts held, [expert_begin, expert_end); expert_end < 0 means all of them.
  int64_t expert_begin = 0, expert_end = -1;
};

// A MoE layer's shape from the model spec (router precision left at its fp32 default).
MoeShape MoeShapeFor(const ModelSpec& spec);
// An MLA layer's shape from the model spec, its projections in `precision`.
MlaShape MlaShapeFor(const ModelSpec& spec, GemmPrecision precision);

// The tensors a stage holds, in ModelTensors() order.
std::vector<TensorInfo> StageTensors(const ModelSpec& spec, const StageRange& range);

template <typename T>
struct LayerActivations;  // defined in stage_activations.h (internal)
template <typename T>
struct MtpActivations;

template <typename T>
struct StageActivations {
  StageActivations();
  ~StageActivations();
  StageActivations(StageActivations&&) noexcept;
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids, targets;
  std::vector<std::unique_ptr<LayerActivations<T>>> layers;
  std::vector<T> final_in, final_norm, final_rstd, logits;
  std::vector<std::unique_ptr<MtpActivations<T>>> mtp;  // one per MTP module that ran
  double loss = 0;          // mean cross-entropy (head stage), the main model's
  double mtp_loss = 0;      // mean over the MTP modules of their mean cross-entropy
  double balance_loss = 0;  // Σ over this stage's MoE layers of the sequence-wise loss
};

template <typename T>
class ModelStage {
 public:
  // `precision` sets the GEMM precision (docs/architecture.md §4): bf16 rounds every linear layer's
  // inputs; fp8 quantizes the decoder's linear layers and keeps head and router in bf16.
  // With `ep`, the stage holds only the experts of `range` and exchanges tokens with the
  // other holders through ep->group (which must outlive the stage).
  ModelStage(const ModelSpec& spec, StageRange range, Parameters<T>* params,
             Precision precision = Precision::kFp32, ExpertParallel ep = {});

  // Not OK when the stage cannot run: Internal when `params` lacks a tensor of the range.
  // Forward and Backward return it.
  const Status& status() const { return status_; }

  // B sequences of S tokens (N = B·S). Input: ids [N] with the embedding, else hidden [N, D].
  // With the head, targets [N] give the loss (returned); else hidden_out [N, D] is written and
  // 0 returned. An expert group's data-plane failure comes back as itself.
  // With the head and model.mtp.depth > 0 (and MTP enabled), the multi-token prediction
  // modules run after the head on the same targets: module k reads token i + k from the
  // targets (t_{i+k-1}) and predicts t_{i+k} at positions i < S - k (docs/architecture.md §4.4).
  // acts.mtp_loss gets their mean cross-entropy; the returned loss stays the main model's.
  Result<double> Forward(StageActivations<T>& acts, const int32_t* ids, const T* hidden_in,
                         const int32_t* targets, int64_t batch, int64_t seq, T* hidden_out);

  // From the loss (head stage; scaled by dloss) or from dhidden_out [N, D]. Writes
  // dhidden_in [N, D] when the stage has no embedding. The balance losses are scaled by dloss,
  // MTP module k's cross-entropy by dloss · mtp.loss_weight / mtp.depth.
  Status Backward(StageActivations<T>& acts, double dloss, const T* dhidden_out, T* dhidden_in);

  // Tokens routed to each expert in the last Forward, per MoE layer of this stage:
  // [moe layer index within the stage][expert]. The MTP modules' MoE blocks come last (zero
  // after a forward without MTP).
  const std::vector<std::vector<int64_t>>& expert_counts() const { return expert_counts_; }
  // MoE layers held, in order (global layer indices; an MTP module k's block is n_layers + k - 1).
  const std::vector<int64_t>& moe_layers() const { return moe_layers_; }
  // Aux-loss-free balancing: b_i += γ · sign(mean_load − load_i) for one MoE layer, from the
  // step's global counts [E]. `layer` is a global layer index.
  void UpdateBalanceBias(int64_t layer, const int64_t* counts, double gamma);

  const StageRange& range() const { return range_; }

  // Multi-token prediction runs in training forwards only: evaluation and `moerun eval`
  // measure the main model. On by default on a head stage of a model with model.mtp.depth > 0.
  void set_mtp_enabled(bool enabled) { mtp_enabled_ = enabled; }
  bool mtp_enabled() const { return mtp_enabled_; }
  // MTP modules this stage holds (model.mtp.depth on the head stage, else 0).
  int64_t mtp_depth() const { return mtp_depth_; }

 private:
  Status LayerForward(int64_t layer, LayerActivations<T>& a, const T* x, T* y, int64_t b,
                      int64_t s);
  // The MTP modules after the head (model_stage_mtp.cc): forward from acts.final_norm and the
  // targets; backward adds the gradient of final_norm to dfinal [N, D].
  Status MtpForward(StageActivations<T>& acts);
  Status MtpBackward(StageActivations<T>& acts, double dloss, T* dfinal);
  // dh: in, the gradient of the layer's output; out, of its input.
  Status LayerBackward(int64_t layer, LayerActivations<T>& a, double dloss, T* dh, int64_t b,
                       int64_t s);
  // The attention half of multi-head attention: a.mid += o_proj(attention(a.n1)); its
  // backward writes dn (=) from dh, the gradient of a.mid.
  void MhaForward(int64_t layer, LayerActivations<T>& a, int64_t b, int64_t s);
  void MhaBackward(int64_t layer, LayerActivations<T>& a, const T* dh, T* dn, int64_t b, int64_t s);
  T* Param(int64_t layer, const char* suffix);
  T* ParamGrad(int64_t layer, const char* suffix);
  MlpWeights<T> Mlp(int64_t layer, const std::string& prefix, int64_t hidden);
  // `bias` receives the layer's balancing bias as fp32 (the router's input type).
  MoeWeights<T> Moe(int64_t layer, std::vector<float>* bias);
  MlaWeights<T> Mla(int64_t layer);

  ModelSpec spec_;
  MoeShape moe_shape_;
  MlaShape mla_shape_;                                     // attention: mla
  GemmPrecision linear_precision_ = GemmPrecision::kFp32;  // decoder projections and MLPs
  GemmPrecision head_precision_ = GemmPrecision::kFp32;    // LM head (and router: moe_shape_)
  ExpertParallel ep_;
  StageRange range_;
  Parameters<T>* params_;
  std::vector<int64_t> moe_layers_;  // the MTP modules' MoE blocks included, last
  int64_t mtp_depth_ = 0;
  bool mtp_enabled_ = true;
  std::vector<std::vector<int64_t>> expert_counts_;
  Status status_;
};

}  // namespace moerun::model
