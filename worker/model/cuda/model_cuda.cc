#include "worker/model/cuda/model_cuda.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "worker/model/cuda/model_cuda_internal.h"
#include "worker/model/fp8_shape_support.h"
#include "worker/model/model_stage.h"

namespace moerun::model::cuda {

namespace kc = moerun::kernels::cuda;
using model_cuda_internal::Blas;
using model_cuda_internal::Cuda;
using model_cuda_internal::LayerName;

template <typename T>
Result<std::unique_ptr<ModelCuda<T>>> ModelCuda<T>::Create(const ModelSpec& spec,
                                                           const Parameters<float>& params,
                                                           int64_t batch, int64_t seq,
                                                           cudaStream_t stream,
                                                           cublasHandle_t handle, bool fp8) {
  return Create(spec, StageRange{0, spec.n_layers, true, true, 0, -1}, params, batch, seq, stream,
                handle, fp8);
}

template <typename T>
Result<std::unique_ptr<ModelCuda<T>>> ModelCuda<T>::Create(
    const ModelSpec& spec, const StageRange& range, const Parameters<float>& params, int64_t batch,
    int64_t seq, cudaStream_t stream, cublasHandle_t handle, bool fp8, ExpertGroupCuda ep) {
  if (batch <= 0 || seq <= 0) return Status::InvalidArgument("model on the GPU: empty batch");
  if (range.has_head && seq <= spec.mtp.depth) {
    return Status::InvalidArgument("model on the GPU: sequences of " + std::to_string(seq) +
                                   " tokens leave MTP module " + std::to_string(spec.mtp.depth) +
                                   " no position");
  }
  if (range.layer_begin < 0 || range.layer_end > spec.n_layers ||
      range.layer_begin > range.layer_end) {
    return Status::InvalidArgument("model on the GPU: layers " + std::to_string(range.layer_begin) +
                                   ".." + std::to_string(range.layer_end) + " of a model of " +
                                   std::to_string(spec.n_layers));
  }
  const bool all_experts = range.expert_end < 0 ||
                           (range.expert_begin == 0 && range.expert_end >= spec.moe.routed_experts);
  if (!all_experts &&
      (ep.group == nullptr || range.expert_end - range.expert_begin != ep.experts_per_rank)) {
    return Status::InvalidArgument(
        "model on the GPU: a stage holding experts " + std::to_string(range.expert_begin) + ".." +
        std::to_string(range.expert_end - 1) + " needs an expert group of that many per rank");
  }
  if (all_experts) ep = {};  // every expert here: nothing to exchange
  if (ep.group != nullptr && range.expert_begin != ep.group->rank() * ep.experts_per_rank) {
    return Status::InvalidArgument("model on the GPU: member " + std::to_string(ep.group->rank()) +
                                   " of the expert group holds experts from " +
                                   std::to_string(ep.group->rank() * ep.experts_per_rank) +
                                   ", not " + std::to_string(range.expert_begin));
  }
  const std::vector<TensorInfo> tensors = StageTensors(spec, range);
  bool same = tensors.size() == params.views().size();
  for (size_t i = 0; same && i < tensors.size(); ++i)
    same = tensors[i].name == params.views()[i].info.name;
  if (!same) {
    return Status::InvalidArgument(
        "model on the GPU: the parameters given (" + std::to_string(params.views().size()) +
        " tensors) are not the stage's (" + std::to_string(tensors.size()) + " tensors)");
  }
  std::unique_ptr<ModelCuda<T>> m(new ModelCuda<T>());
  if (fp8) {
    if constexpr (!std::is_same_v<T, __nv_bfloat16>) {
      return Status::InvalidArgument("model on the GPU: fp8 runs with bf16 storage");
    } else {
      ModelSpec sized = spec;  // the MTP modules' token counts follow the sequences run
      sized.seq_len = seq;
      MOERUN_RETURN_IF_ERROR(Fp8ShapeSupport(sized, batch * seq));
      const MoeShape shape = MoeShapeFor(spec);
      // MTP's eh_proj reads 2 x d_model features.
      const int64_t features =
          std::max({spec.d_model, AttentionWidth(spec), spec.ffn_hidden, shape.expert_hidden,
                    shape.shared_hidden, spec.mtp.depth > 0 ? 2 * spec.d_model : 0});
      // With expert parallelism an expert may get a row from every member's every token.
      const int64_t max_rows = batch * seq * (ep.group != nullptr ? ep.group->size() : 1);
      auto f = Fp8Linear::Create(max_rows, features, stream);
      if (!f.ok()) return f.status();
      m->fp8_ = std::move(f.value());
    }
  }
  m->spec_ = spec;
  m->range_ = range;
  m->ep_ = ep;
  m->batch_ = batch;
  m->seq_ = seq;
  m->stream_ = stream;
  m->handle_ = handle;
  MOERUN_RETURN_IF_ERROR(Blas(cublasSetStream(handle, stream), "binding the stream"));
  MOERUN_RETURN_IF_ERROR(m->Allocate(params));
  return Result<std::unique_ptr<ModelCuda<T>>>(std::move(m));
}

template <typename T>
ModelCuda<T>::~ModelCuda() {
  layers_.clear();  // MoE layers free their own buffers first
  mtp_layers_.clear();
  for (void* p : owned_) cudaFree(p);
}

template <typename T>
Status ModelCuda<T>::Allocate(const Parameters<float>& params) {
  views_ = params.views();
  for (const auto& v : views_) offset_[v.info.name] = v.offset;
  runs_[0] = TrainableRuns(views_, false);
  runs_[1] = TrainableRuns(views_, true);
  // A last stage's copy of the embedding (multi-token prediction) is the first stage's to count.
  std::vector<ParameterView> counted;
  for (const auto& v : views_)
    if (v.info.role != TensorRole::kEmbedding || range_.has_embedding) counted.push_back(v);
  norm_runs_[0] = TrainableRuns(counted, false);
  norm_runs_[1] = TrainableRuns(counted, true);
  size_ = params.size();
  const int64_t n = batch_ * seq_, d = spec_.d_model, hh = spec_.d_model, h = spec_.n_heads,
                v = spec_.vocab_size, f = spec_.ffn_hidden;
  const bool mla = spec_.attention == AttentionKind::kMla;
  // Attention scratch: MHA's q, k, v and output are [N, hh]; MLA's dq_, dk_ (its d(kv)),
  // dv_ (its d(k_pe)) and datt_ take their own widths.
  const int64_t wq = mla ? spec_.n_heads * (spec_.qk_nope_head_dim + spec_.qk_rope_head_dim) : hh;
  const int64_t wk = mla ? spec_.n_heads * (spec_.qk_nope_head_dim + spec_.v_head_dim) : hh;
  const int64_t wv = mla ? spec_.qk_rope_head_dim : hh;
  const int64_t wo = mla ? spec_.n_heads * spec_.v_head_dim : hh;
  master_ = Alloc<float>(size_);
  grads_ = Alloc<float>(size_);
  m_ = Alloc<float>(size_);
  v_ = Alloc<float>(size_);
  if constexpr (std::is_same_v<T, float>) {
    compute_ = master_;
  } else {
    compute_ = Alloc<T>(size_);
  }
  if (range_.has_embedding) ids_ = Alloc<int32_t>(n);
  for (int64_t l = range_.layer_begin; l <= range_.layer_end; ++l) xs_.push_back(Alloc<T>(n * d));
  if (range_.has_head) {
    targets_ = Alloc<int32_t>(n);
    fnorm_ = Alloc<T>(n * d);
    frstd_ = Alloc<float>(n);
    logits_ = Alloc<T>(n * v);
    dlogits_ = Alloc<T>(n * v);
    row_loss_ = Alloc<float>(n);
  }
  loss_ = Alloc<double>(1);
  partial_ = Alloc<double>(kc::kNormBlocks);
  norm_ = Alloc<double>(1);
  dh_ = Alloc<T>(n * d);
  dn_ = Alloc<T>(n * d);
  dx_ = Alloc<T>(n * d);
  datt_ = Alloc<T>(n * wo);
  dq_ = Alloc<T>(n * wq);
  dk_ = Alloc<T>(n * wk);
  dv_ = Alloc<T>(n * wv);
  da_ = Alloc<T>(n * f);
  dg_ = Alloc<T>(n * f);
  du_ = Alloc<T>(n * f);
  ds_ = Alloc<float>(batch_ * h * seq_ * seq_);
  for (int64_t l = range_.layer_begin; l < range_.layer_end; ++l) {
    layers_.push_back(std::make_unique<Layer>());
    MOERUN_RETURN_IF_ERROR(AllocateLayer(l, *layers_.back()));
  }
  MOERUN_RETURN_IF_ERROR(AllocateMtp());
  if (out_of_memory_) return Status::Internal("model on the GPU: out of device memory");
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(master_, params.values().data(), size_ * sizeof(float),
                           cudaMemcpyHostToDevice, stream_),
           "uploading weights"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(grads_, 0, size_ * sizeof(float), stream_), "grads"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(m_, 0, size_ * sizeof(float), stream_), "moments"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(v_, 0, size_ * sizeof(float), stream_), "moments"));
  if constexpr (!std::is_same_v<T, float>) {
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchCastFromFloat<T>(master_, compute_, size_, stream_), "compute copy"));
  }
  return Cuda(cudaStreamSynchronize(stream_), "uploading weights");
}

template <typename T>
Status ModelCuda<T>::AllocateLayer(int64_t l, Layer& layer) {
  const int64_t n = batch_ * seq_, d = spec_.d_model, hh = spec_.d_model, h = spec_.n_heads,
                f = spec_.ffn_hidden;
  const bool mla = spec_.attention == AttentionKind::kMla;
  const MoeShape shape = MoeShapeFor(spec_);
  layer.n1 = Alloc<T>(n * d);
  if (mla) {
    AllocateMla(layer);
  } else {
    layer.q = Alloc<T>(n * hh);
    layer.k = Alloc<T>(n * hh);
    layer.v = Alloc<T>(n * hh);
    layer.att = Alloc<T>(n * hh);
  }
  layer.mid = Alloc<T>(n * d);
  layer.n2 = Alloc<T>(n * d);
  layer.rstd1 = Alloc<float>(n);
  layer.rstd2 = Alloc<float>(n);
  layer.probs = Alloc<float>(batch_ * h * seq_ * seq_);
  if (spec_.dense_layer(l)) {
    layer.g = Alloc<T>(n * f);
    layer.u = Alloc<T>(n * f);
    layer.a = Alloc<T>(n * f);
  } else {
    auto moe = MoeLayerCuda<T>::Create(shape, n, stream_, handle_, fp8_.get(), ep_);
    if (!moe.ok()) return moe.status();
    layer.moe = std::move(moe.value());
    // Every expert's gate, up, down follow each other: expert x's gate is x·3·H·D further.
    // The first expert held (all of them, or this rank's share) comes first.
    const std::string first =
        "mlp.experts." + std::to_string(ep_.group ? range_.expert_begin : 0) + ".";
    auto w = [&](std::string s) { return W(LayerName(l, s)); };
    auto g = [&](std::string s) { return G(LayerName(l, s)); };
    layer.moe_w = {w("mlp.gate.weight"),
                   Master(LayerName(l, "mlp.gate.e_score_correction_bias")),
                   w(first + "gate_proj.weight"),
                   w(first + "up_proj.weight"),
                   w(first + "down_proj.weight"),
                   w("mlp.shared_experts.gate_proj.weight"),
                   w("mlp.shared_experts.up_proj.weight"),
                   w("mlp.shared_experts.down_proj.weight"),
                   3 * shape.expert_hidden * d};
    if (fp8_) {  // fp8 quantizes the fp32 masters, as the CPU does
      auto m = [&](std::string s) -> const float* { return Master(LayerName(l, s)); };
      layer.moe_w.master_gate = m(first + "gate_proj.weight");
      layer.moe_w.master_up = m(first + "up_proj.weight");
      layer.moe_w.master_down = m(first + "down_proj.weight");
      layer.moe_w.master_shared_gate = m("mlp.shared_experts.gate_proj.weight");
      layer.moe_w.master_shared_up = m("mlp.shared_experts.up_proj.weight");
      layer.moe_w.master_shared_down = m("mlp.shared_experts.down_proj.weight");
    }
    layer.moe_g = {g("mlp.gate.weight"),
                   g(first + "gate_proj.weight"),
                   g(first + "up_proj.weight"),
                   g(first + "down_proj.weight"),
                   g("mlp.shared_experts.gate_proj.weight"),
                   g("mlp.shared_experts.up_proj.weight"),
                   g("mlp.shared_experts.down_proj.weight")};
  }
  if (fp8_) {
    std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> linears = {
        {"self_attn.q_proj.weight", {hh, d}},
        {"self_attn.k_proj.weight", {hh, d}},
        {"self_attn.v_proj.weight", {hh, d}},
        {"self_attn.o_proj.weight", {d, hh}}};
    if (mla) linears = MlaLinears();
    if (spec_.dense_layer(l)) {
      linears.push_back({"mlp.gate_proj.weight", {f, d}});
      linears.push_back({"mlp.up_proj.weight", {f, d}});
      linears.push_back({"mlp.down_proj.weight", {d, f}});
    }
    for (const auto& [name, shape_oi] : linears) {
      auto w = fp8_->NewWeight(shape_oi.first, shape_oi.second);
      if (!w.ok()) return w.status();
      layer.fp8_w[name] = w.value();
    }
  }
  return Status::OK();
}

template <typename T>
T* ModelCuda<T>::W(const std::string& name) const {
  auto it = offset_.find(name);
  return it == offset_.end() ? nullptr : compute_ + it->second;
}

template <typename T>
float* ModelCuda<T>::G(const std::string& name) const {
  auto it = offset_.find(name);
  return it == offset_.end() ? nullptr : grads_ + it->second;
}

template <typename T>
float* ModelCuda<T>::Master(const std::string& name) const {
  auto it = offset_.find(name);
  return it == offset_.end() ? nullptr : master_ + it->second;
}

template <typename T>
Result<double> ModelCuda<T>::Forward(const int32_t* ids, const int32_t* targets) {
  const int64_t n = batch_ * seq_, d = spec_.d_model, v = spec_.vocab_size;
  if ((range_.has_embedding && !ids) || (range_.has_head && !targets)) {
    return Status::InvalidArgument(
        "model on the GPU: a stage with the embedding needs ids, one "
        "with the head needs targets");
  }
  if (range_.has_embedding) {
    MOERUN_RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(ids_, ids, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_), "ids"));
    MOERUN_RETURN_IF_ERROR(Cuda(
        kc::LaunchEmbeddingForward<T>(W("model.embed_tokens.weight"), ids_, xs_[0], n, d, stream_),
        "embedding"));
  }
  seq_now_ = seq_;
  for (int64_t l = range_.layer_begin; l < range_.layer_end; ++l) {
    const size_t i = size_t(l - range_.layer_begin);
    MOERUN_RETURN_IF_ERROR(LayerForward(l, xs_[i], xs_[i + 1]));
  }
  fp8_stale_ = false;  // every layer quantized its weights (the MoE layers theirs)
  mtp_ran_ = false;
  if (!range_.has_head) {
    MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "forward"));
    return 0.0;
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(targets_, targets, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_),
           "targets"));
  MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormForward<T>(xs_.back(), W("model.norm.weight"),
                                                          fnorm_, frstd_, n, d, stream_),
                              "final norm"));
  MOERUN_RETURN_IF_ERROR(
      Blas(kc::LinearForward<T>(handle_, fnorm_, W("lm_head.weight"), logits_, n, d, v), "head"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchCrossEntropy<T>(logits_, targets_, nullptr, row_loss_, loss_, n, v, 1.0, stream_),
      "cross-entropy"));
  if (mtp_enabled_ && !mtp_.empty()) {
    MOERUN_RETURN_IF_ERROR(MtpForward(targets));
    mtp_ran_ = true;
  }
  double loss = 0;
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(&loss, loss_, sizeof(double), cudaMemcpyDeviceToHost, stream_), "loss"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "forward"));
  return loss;
}

template <typename T>
Status ModelCuda<T>::LayerForward(int64_t l, const T* x, T* y) {
  Layer& a = LayerAt(l);
  const int64_t n = batch_ * seq_now_, d = spec_.d_model, h = spec_.n_heads, hd = d / h,
                hh = h * hd;
  auto P = [&](const char* s) { return W(LayerName(l, s)); };
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRmsNormForward<T>(x, P("input_layernorm.weight"), a.n1, a.rstd1, n, d, stream_),
      "input norm"));
  // This step's weights, quantized once for all its micro-batches (the MTP modules' layers in
  // their first forward of the step).
  if (fp8_ && l < spec_.n_layers && fp8_stale_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      for (const auto& [name, w] : a.fp8_w)  // from the fp32 masters, as the CPU does
        MOERUN_RETURN_IF_ERROR(fp8_->Quantize(Master(LayerName(l, name)), w));
    }
  }
  if (spec_.attention == AttentionKind::kMla) {
    // mid = x + o_proj(mla(n1))
    MOERUN_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(a.mid, x, n * d * sizeof(T), cudaMemcpyDeviceToDevice, stream_),
             "residual"));
    MOERUN_RETURN_IF_ERROR(MlaForward(l, a));
    return FfnForward(l, a, y);
  }
  MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.q_proj.weight", a.n1, a.q, d, hh));
  MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.k_proj.weight", a.n1, a.k, d, hh));
  MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.v_proj.weight", a.n1, a.v, d, hh));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRope<T>(a.q, batch_, seq_now_, h, hd, spec_.rope_theta, false, stream_), "rope q"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRope<T>(a.k, batch_, seq_now_, h, hd, spec_.rope_theta, false, stream_), "rope k"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchAttentionForward<T>(a.q, a.k, a.v, a.att, a.probs, batch_, seq_now_, h, hd, hd,
                                         1.0 / std::sqrt(double(hd)), stream_),
           "attention"));
  // mid = x + att · Woᵀ
  MOERUN_RETURN_IF_ERROR(Cuda(
      cudaMemcpyAsync(a.mid, x, n * d * sizeof(T), cudaMemcpyDeviceToDevice, stream_), "residual"));
  MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.o_proj.weight", a.att, a.mid, hh, d, true));
  return FfnForward(l, a, y);
}

template <typename T>
Status ModelCuda<T>::FfnForward(int64_t l, Layer& a, T* y) {
  const int64_t n = batch_ * seq_now_, d = spec_.d_model;
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRmsNormForward<T>(a.mid, W(LayerName(l, "post_attention_layernorm.weight")),
                                       a.n2, a.rstd2, n, d, stream_),
           "post-attention norm"));
  if (spec_.dense_layer(l)) {
    const int64_t f = spec_.ffn_hidden;
    MOERUN_RETURN_IF_ERROR(Linear(l, "mlp.gate_proj.weight", a.n2, a.g, d, f));
    MOERUN_RETURN_IF_ERROR(Linear(l, "mlp.up_proj.weight", a.n2, a.u, d, f));
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchSwiGluForward<T>(a.g, a.u, a.a, n * f, stream_), "act"));
    MOERUN_RETURN_IF_ERROR(Linear(l, "mlp.down_proj.weight", a.a, y, f, d));
  } else {
    MOERUN_RETURN_IF_ERROR(a.moe->Forward(a.n2, batch_, seq_now_, a.moe_w, y));
  }
  return Cuda(kc::LaunchAddInPlace<T>(y, a.mid, n * d, stream_), "residual");
}

template <typename T>
Status ModelCuda<T>::Backward(double dloss) {
  const int64_t n = batch_ * seq_, d = spec_.d_model, v = spec_.vocab_size;
  if (range_.has_head) {  // else dh_ (output_grad()) holds d(stage output)
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchCrossEntropy<T>(logits_, targets_, dlogits_, row_loss_,
                                                          loss_, n, v, dloss, stream_),
                                "cross-entropy backward"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearBackward<T>(handle_, dlogits_, fnorm_, W("lm_head.weight"), dn_,
                                   G("lm_head.weight"), n, d, v, false),
             "head backward"));
    T* dfnorm = dn_;  // d(fnorm_); the MTP modules add theirs (they use dn_ as scratch)
    if (mtp_ran_) {
      MOERUN_RETURN_IF_ERROR(
          Cuda(cudaMemcpyAsync(dfnorm_, dn_, n * d * sizeof(T), cudaMemcpyDeviceToDevice, stream_),
               "d(final norm)"));
      MOERUN_RETURN_IF_ERROR(MtpBackward(dloss));
      dfnorm = dfnorm_;
    }
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormBackward<T>(dfnorm, xs_.back(), W("model.norm.weight"), frstd_, dh_,
                                          G("model.norm.weight"), n, d, stream_),
             "final norm backward"));
  }
  seq_now_ = seq_;
  for (int64_t l = range_.layer_end - 1; l >= range_.layer_begin; --l)
    MOERUN_RETURN_IF_ERROR(LayerBackward(l, xs_[size_t(l - range_.layer_begin)], dloss));
  if (range_.has_embedding) {  // else dh_ (input_grad()) is d(stage input)
    MOERUN_RETURN_IF_ERROR(Cuda(
        kc::LaunchEmbeddingBackward<T>(dh_, ids_, G("model.embed_tokens.weight"), n, d, stream_),
        "embedding backward"));
  }
  return Cuda(cudaStreamSynchronize(stream_), "backward");
}

template <typename T>
Status ModelCuda<T>::LayerBackward(int64_t l, const T* x, double dloss) {
  Layer& a = LayerAt(l);
  const int64_t n = batch_ * seq_now_, d = spec_.d_model, h = spec_.n_heads, hd = d / h,
                hh = h * hd;
  auto P = [&](const char* s) { return W(LayerName(l, s)); };
  auto PG = [&](const char* s) { return G(LayerName(l, s)); };
  // FFN half: out = mid + FFN(norm2(mid)); dh_ holds d(out).
  if (spec_.dense_layer(l)) {
    const int64_t f = spec_.ffn_hidden;
    MOERUN_RETURN_IF_ERROR(LinearGrad(l, "mlp.down_proj.weight", dh_, a.a, da_, f, d, false));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchSwiGluBackward<T>(da_, a.g, a.u, dg_, du_, n * f, stream_), "act backward"));
    MOERUN_RETURN_IF_ERROR(LinearGrad(l, "mlp.gate_proj.weight", dg_, a.n2, dn_, d, f, false));
    MOERUN_RETURN_IF_ERROR(LinearGrad(l, "mlp.up_proj.weight", du_, a.n2, dn_, d, f, true));
  } else {
    MOERUN_RETURN_IF_ERROR(
        a.moe->Backward(dh_, a.n2, batch_, seq_now_, a.moe_w, a.moe_g, dloss, dn_));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRmsNormBackward<T>(dn_, a.mid, P("post_attention_layernorm.weight"), a.rstd2,
                                        dx_, PG("post_attention_layernorm.weight"), n, d, stream_),
           "post-attention norm backward"));
  MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchAddInPlace<T>(dh_, dx_, n * d, stream_), "d(mid)"));
  // Attention half: mid = x + o_proj(attention(rope(q), rope(k), v)), or MLA's.
  if (spec_.attention == AttentionKind::kMla) {
    MOERUN_RETURN_IF_ERROR(MlaBackward(l, a));
    return InputNormBackward(l, a, x);
  }
  MOERUN_RETURN_IF_ERROR(LinearGrad(l, "self_attn.o_proj.weight", dh_, a.att, datt_, hh, d, false));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchAttentionBackward<T>(datt_, a.q, a.k, a.v, a.probs, ds_, dq_, dk_, dv_, batch_,
                                     seq_now_, h, hd, hd, 1.0 / std::sqrt(double(hd)), stream_),
      "attention backward"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRope<T>(dq_, batch_, seq_now_, h, hd, spec_.rope_theta, true, stream_), "rope dq"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRope<T>(dk_, batch_, seq_now_, h, hd, spec_.rope_theta, true, stream_), "rope dk"));
  MOERUN_RETURN_IF_ERROR(LinearGrad(l, "self_attn.q_proj.weight", dq_, a.n1, dn_, d, hh, false));
  MOERUN_RETURN_IF_ERROR(LinearGrad(l, "self_attn.k_proj.weight", dk_, a.n1, dn_, d, hh, true));
  MOERUN_RETURN_IF_ERROR(LinearGrad(l, "self_attn.v_proj.weight", dv_, a.n1, dn_, d, hh, true));
  return InputNormBackward(l, a, x);
}

template <typename T>
Status ModelCuda<T>::InputNormBackward(int64_t l, Layer& a, const T* x) {
  const int64_t n = batch_ * seq_now_, d = spec_.d_model;
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRmsNormBackward<T>(dn_, x, W(LayerName(l, "input_layernorm.weight")), a.rstd1, dx_,
                                   G(LayerName(l, "input_layernorm.weight")), n, d, stream_),
      "input norm backward"));
  return Cuda(kc::LaunchAddInPlace<T>(dh_, dx_, n * d, stream_), "d(x)");
}

template <typename T>
Status ModelCuda<T>::Linear(int64_t l, const std::string& name, const T* x, T* y, int64_t in,
                            int64_t out, bool accumulate) {
  const int64_t n = batch_ * seq_now_;
  const std::string full = LayerName(l, name);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (fp8_) return fp8_->Forward(x, LayerAt(l).fp8_w.at(name), y, n, accumulate);
  }
  return Blas(kc::Gemm<T>(handle_, false, true, n, out, in, 1.0f, x, in, W(full), in,
                          accumulate ? 1.0f : 0.0f, y, out),
              full);
}

template <typename T>
Status ModelCuda<T>::LinearGrad(int64_t l, const std::string& name, const T* dy, const T* x, T* dx,
                                int64_t in, int64_t out, bool accumulate_dx) {
  const int64_t n = batch_ * seq_now_;
  const std::string full = LayerName(l, name);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (fp8_) {
      return fp8_->Backward(dy, x, LayerAt(l).fp8_w.at(name), dx, G(full), n, accumulate_dx);
    }
  }
  return Blas(
      kc::LinearBackward<T>(handle_, dy, x, W(full), dx, G(full), n, in, out, accumulate_dx),
      full + " backward");
}

template class ModelCuda<float>;
template class ModelCuda<__nv_bfloat16>;

}  // namespace moerun::model::cuda
