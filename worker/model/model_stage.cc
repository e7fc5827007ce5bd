#include "worker/model/model_stage.h"

#include <cmath>
#include <string>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/router.h"
#include "worker/model/ffn_block.h"
#include "worker/model/stage_activations.h"

namespace moerun::model {

namespace cpu = kernels::cpu;

template <typename T>
StageActivations<T>::StageActivations() = default;
template <typename T>
StageActivations<T>::~StageActivations() = default;
template <typename T>
StageActivations<T>::StageActivations(StageActivations&&) noexcept = default;

namespace {

std::string LayerName(int64_t layer, const char* suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

}  // namespace

std::vector<TensorInfo> StageTensors(const ModelSpec& spec, const StageRange& r) {
  std::vector<TensorInfo> out;
  const int64_t e_end = r.expert_end < 0 ? spec.moe.routed_experts : r.expert_end;
  for (TensorInfo& t : ModelTensors(spec)) {
    bool here = StageHolds(spec, t, r.layer_begin, r.layer_end, r.has_embedding, r.has_head);
    if (t.role == TensorRole::kRoutedExpert) {
      here = here && t.expert >= r.expert_begin && t.expert < e_end;
    }
    if (here) out.push_back(std::move(t));
  }
  return out;
}

MlaShape MlaShapeFor(const ModelSpec& spec, GemmPrecision precision) {
  MlaShape m;
  m.d_model = spec.d_model;
  m.heads = spec.n_heads;
  m.q_lora_rank = spec.q_lora_rank;
  m.kv_lora_rank = spec.kv_lora_rank;
  m.nope = spec.qk_nope_head_dim;
  m.rope = spec.qk_rope_head_dim;
  m.v = spec.v_head_dim;
  m.rope_theta = spec.rope_theta;
  m.precision = precision;
  return m;
}

MoeShape MoeShapeFor(const ModelSpec& spec) {
  MoeShape shape;
  shape.router = {spec.moe.routed_experts,
                  spec.moe.top_k,
                  spec.moe.n_groups,
                  spec.moe.topk_groups,
                  spec.moe.score_func == ScoreFunc::kSoftmax,
                  spec.moe.route_scale};
  shape.d_model = spec.d_model;
  shape.expert_hidden = spec.moe.expert_hidden;
  shape.shared_hidden = spec.moe.expert_hidden * spec.moe.shared_experts;
  shape.seq_aux_alpha = spec.moe.balance.seq_aux_alpha;
  return shape;
}

template <typename T>
ModelStage<T>::ModelStage(const ModelSpec& spec, StageRange range, Parameters<T>* params,
                          Precision precision, ExpertParallel ep)
    : spec_(spec), range_(range), params_(params) {
  ep_ = ep;
  if (range_.expert_end < 0) range_.expert_end = spec.moe.routed_experts;
  if (precision == Precision::kBf16) {
    linear_precision_ = head_precision_ = GemmPrecision::kBf16;
  } else if (precision == Precision::kFp8) {
    linear_precision_ = GemmPrecision::kFp8;
    head_precision_ = GemmPrecision::kBf16;
  }
  if (spec.attention == AttentionKind::kMla) mla_shape_ = MlaShapeFor(spec, linear_precision_);
  // Every tensor of the range is bound by name below: checked once here.
  for (const TensorInfo& t : StageTensors(spec, range_)) {
    if (status_.ok() && params->Find(t.name) == nullptr)
      status_ = Status::Internal("model stage: the parameters lack " + t.name);
  }
  // The MTP modules' blocks follow the stage's last layer (layers n_layers + k - 1).
  if (range_.has_head) mtp_depth_ = spec.mtp.depth;
  for (int64_t l = range.layer_begin; l < range.layer_end + mtp_depth_; ++l) {
    if (!spec.dense_layer(l)) moe_layers_.push_back(l);
  }
  expert_counts_.assign(moe_layers_.size(), std::vector<int64_t>(spec.moe.routed_experts, 0));
  moe_shape_ = MoeShapeFor(spec);
  moe_shape_.router_precision = head_precision_;
}

template <typename T>
Result<double> ModelStage<T>::Forward(StageActivations<T>& acts, const int32_t* ids,
                                      const T* hidden_in, const int32_t* targets, int64_t b,
                                      int64_t s, T* hidden_out) {
  MOERUN_RETURN_IF_ERROR(status_);
  const int64_t n = b * s, d = spec_.d_model;
  acts.batch = b;
  acts.seq = s;
  acts.balance_loss = 0;
  // The layers' buffers are kept from this slot's last micro-batch: allocating them afresh cost a
  // zero fill and page faults per micro-batch (a tenth of a step at the default job's size).
  // Every forward writes each buffer in full before anything reads it.
  const size_t layers = size_t(range_.layer_end - range_.layer_begin);
  while (acts.layers.size() < layers)
    acts.layers.push_back(std::make_unique<LayerActivations<T>>());
  acts.layers.resize(layers);
  std::vector<T> h(static_cast<size_t>(n * d));
  if (range_.has_embedding) {
    acts.ids.assign(ids, ids + n);
    cpu::EmbeddingForward(params_->Find("model.embed_tokens.weight"), ids, h.data(), n, d);
  } else {
    std::copy(hidden_in, hidden_in + n * d, h.begin());
  }
  std::vector<T> next(h.size());
  for (int64_t l = range_.layer_begin; l < range_.layer_end; ++l) {
    LayerActivations<T>& la = *acts.layers[size_t(l - range_.layer_begin)];
    MOERUN_RETURN_IF_ERROR(LayerForward(l, la, h.data(), next.data(), b, s));
    acts.balance_loss += la.moe.balance_loss;
    h.swap(next);
  }
  if (!range_.has_head) {
    std::copy(h.begin(), h.end(), hidden_out);
    return 0.0;
  }
  const int64_t v = spec_.vocab_size;
  acts.targets.assign(targets, targets + n);
  acts.final_in = std::move(h);
  acts.final_norm.resize(static_cast<size_t>(n * d));
  acts.final_rstd.resize(static_cast<size_t>(n));
  cpu::RmsNormForward(acts.final_in.data(), params_->Find("model.norm.weight"),
                      acts.final_norm.data(), acts.final_rstd.data(), n, d);
  acts.logits.resize(static_cast<size_t>(n * v));
  LinearForwardP(acts.final_norm.data(), params_->Find("lm_head.weight"), acts.logits.data(), n, d,
                 v, head_precision_);
  acts.loss = cpu::CrossEntropy<T>(acts.logits.data(), targets, nullptr, n, v, 1.0);
  acts.mtp_loss = 0;
  if (mtp_enabled_ && mtp_depth_ > 0) {
    MOERUN_RETURN_IF_ERROR(MtpForward(acts));
    return acts.loss;
  }
  // No MTP module ran (evaluation): none has activations, and their blocks routed no token.
  acts.mtp.clear();
  for (size_t j = 0; j < moe_layers_.size(); ++j) {
    if (moe_layers_[j] >= spec_.n_layers)
      std::fill(expert_counts_[j].begin(), expert_counts_[j].end(), 0);
  }
  return acts.loss;
}

template <typename T>
Status ModelStage<T>::Backward(StageActivations<T>& acts, double dloss, const T* dhidden_out,
                               T* dhidden_in) {
  MOERUN_RETURN_IF_ERROR(status_);
  const int64_t b = acts.batch, s = acts.seq, n = b * s, d = spec_.d_model;
  std::vector<T> dh(static_cast<size_t>(n * d));
  if (range_.has_head) {
    const int64_t v = spec_.vocab_size;
    std::vector<T> dlogits(static_cast<size_t>(n * v)), dnorm(static_cast<size_t>(n * d));
    cpu::CrossEntropy<T>(acts.logits.data(), acts.targets.data(), dlogits.data(), n, v, dloss);
    LinearBackwardP(dlogits.data(), acts.final_norm.data(), params_->Find("lm_head.weight"),
                    dnorm.data(), params_->Grad("lm_head.weight"), n, d, v, false, head_precision_);
    if (!acts.mtp.empty()) MOERUN_RETURN_IF_ERROR(MtpBackward(acts, dloss, dnorm.data()));
    cpu::RmsNormBackward(dnorm.data(), acts.final_in.data(), params_->Find("model.norm.weight"),
                         acts.final_rstd.data(), dh.data(), params_->Grad("model.norm.weight"), n,
                         d);
  } else {
    std::copy(dhidden_out, dhidden_out + n * d, dh.begin());
  }
  for (int64_t l = range_.layer_end - 1; l >= range_.layer_begin; --l) {
    MOERUN_RETURN_IF_ERROR(
        LayerBackward(l, *acts.layers[l - range_.layer_begin], dloss, dh.data(), b, s));
  }
  if (range_.has_embedding) {
    cpu::EmbeddingBackward(dh.data(), acts.ids.data(), params_->Grad("model.embed_tokens.weight"),
                           n, d);
  } else {
    std::copy(dh.begin(), dh.end(), dhidden_in);
  }
  return Status::OK();
}

template <typename T>
T* ModelStage<T>::Param(int64_t layer, const char* suffix) {
  return params_->Find(LayerName(layer, suffix));  // present: checked at construction
}

template <typename T>
T* ModelStage<T>::ParamGrad(int64_t layer, const char* suffix) {
  return params_->Grad(LayerName(layer, suffix));
}

template <typename T>
MlpWeights<T> ModelStage<T>::Mlp(int64_t layer, const std::string& prefix, int64_t hidden) {
  const std::string g = prefix + ".gate_proj.weight", u = prefix + ".up_proj.weight",
                    dn = prefix + ".down_proj.weight";
  return {Param(layer, g.c_str()),
          Param(layer, u.c_str()),
          Param(layer, dn.c_str()),
          ParamGrad(layer, g.c_str()),
          ParamGrad(layer, u.c_str()),
          ParamGrad(layer, dn.c_str()),
          hidden,
          linear_precision_};
}

template <typename T>
MlaWeights<T> ModelStage<T>::Mla(int64_t layer) {
  MlaWeights<T> w;
  auto bind = [&](const char* name, const T** value, T** grad) {
    const std::string full = std::string("self_attn.") + name + ".weight";
    *value = Param(layer, full.c_str());
    *grad = ParamGrad(layer, full.c_str());
  };
  if (spec_.q_lora_rank > 0) {
    bind("q_a_proj", &w.q_a, &w.dq_a);
    bind("q_a_layernorm", &w.q_a_norm, &w.dq_a_norm);
    bind("q_b_proj", &w.q_b, &w.dq_b);
  } else {
    bind("q_proj", &w.q, &w.dq);
  }
  bind("kv_a_proj_with_mqa", &w.kv_a, &w.dkv_a);
  bind("kv_a_layernorm", &w.kv_a_norm, &w.dkv_a_norm);
  bind("kv_b_proj", &w.kv_b, &w.dkv_b);
  bind("o_proj", &w.o, &w.d_o);
  return w;
}

template <typename T>
MoeWeights<T> ModelStage<T>::Moe(int64_t layer, std::vector<float>* bias) {
  const int64_t e = spec_.moe.routed_experts;
  const T* b = Param(layer, "mlp.gate.e_score_correction_bias");
  bias->assign(b, b + e);
  MoeWeights<T> w{
      Param(layer, "mlp.gate.weight"), ParamGrad(layer, "mlp.gate.weight"), bias->data(), {}, {}};
  for (int64_t x = range_.expert_begin; x < range_.expert_end; ++x) {
    w.experts.push_back(Mlp(layer, "mlp.experts." + std::to_string(x), spec_.moe.expert_hidden));
  }
  if (moe_shape_.shared_hidden > 0)
    w.shared = Mlp(layer, "mlp.shared_experts", moe_shape_.shared_hidden);
  return w;
}

template <typename T>
void ModelStage<T>::MhaForward(int64_t l, LayerActivations<T>& a, int64_t b, int64_t s) {
  const int64_t n = b * s, d = spec_.d_model, h = spec_.n_heads, hd = d / h, hh = h * hd;
  for (auto* buf : {&a.q, &a.k, &a.v, &a.att}) buf->resize(static_cast<size_t>(n * hh));
  LinearForwardP(a.n1.data(), Param(l, "self_attn.q_proj.weight"), a.q.data(), n, d, hh,
                 linear_precision_);
  LinearForwardP(a.n1.data(), Param(l, "self_attn.k_proj.weight"), a.k.data(), n, d, hh,
                 linear_precision_);
  LinearForwardP(a.n1.data(), Param(l, "self_attn.v_proj.weight"), a.v.data(), n, d, hh,
                 linear_precision_);
  cpu::Rope(a.q.data(), b, s, h, hd, spec_.rope_theta, false);
  cpu::Rope(a.k.data(), b, s, h, hd, spec_.rope_theta, false);
  a.probs.resize(static_cast<size_t>(b * h * s * s));
  cpu::AttentionForward(a.q.data(), a.k.data(), a.v.data(), a.att.data(), a.probs.data(), b, s, h,
                        hd, hd, 1.0 / std::sqrt(double(hd)));
  LinearForwardP(a.att.data(), Param(l, "self_attn.o_proj.weight"), a.mid.data(), n, hh, d,
                 linear_precision_, true);
}

template <typename T>
Status ModelStage<T>::LayerForward(int64_t l, LayerActivations<T>& a, const T* x, T* y, int64_t b,
                                   int64_t s) {
  const int64_t n = b * s, d = spec_.d_model;
  a.x.assign(x, x + n * d);
  a.n1.resize(static_cast<size_t>(n * d));
  a.rstd1.resize(static_cast<size_t>(n));
  cpu::RmsNormForward(x, Param(l, "input_layernorm.weight"), a.n1.data(), a.rstd1.data(), n, d);
  a.mid.assign(x, x + n * d);  // residual: mid = x + attention(n1)
  if (spec_.attention == AttentionKind::kMla) {
    MlaForward(a.n1.data(), b, s, mla_shape_, Mla(l), a.mla, a.mid.data(), true);
  } else {
    MhaForward(l, a, b, s);
  }
  a.n2.resize(static_cast<size_t>(n * d));
  a.rstd2.resize(static_cast<size_t>(n));
  cpu::RmsNormForward(a.mid.data(), Param(l, "post_attention_layernorm.weight"), a.n2.data(),
                      a.rstd2.data(), n, d);
  if (spec_.dense_layer(l)) {
    const int64_t f = spec_.ffn_hidden;
    for (auto* buf : {&a.g, &a.u, &a.a}) buf->resize(static_cast<size_t>(n * f));
    MlpForward(a.n2.data(), n, d, Mlp(l, "mlp", f), a.g.data(), a.u.data(), a.a.data(), y, false);
  } else {
    std::vector<float> bias;
    MOERUN_RETURN_IF_ERROR(
        MoeForward(a.n2.data(), b, s, moe_shape_, Moe(l, &bias), a.moe, y, &ep_));
    expert_counts_[static_cast<size_t>(l - moe_layers_.front())] = a.moe.plan.counts;
  }
  for (int64_t i = 0; i < n * d; ++i) y[i] += a.mid[i];
  return Status::OK();
}

template <typename T>
void ModelStage<T>::MhaBackward(int64_t l, LayerActivations<T>& a, const T* dh, T* dn, int64_t b,
                                int64_t s) {
  const int64_t n = b * s, d = spec_.d_model, h = spec_.n_heads, hd = d / h, hh = h * hd;
  // mid = x + o_proj(attention(rope(q), rope(k), v)).
  std::vector<T> datt(static_cast<size_t>(n * hh));
  LinearBackwardP(dh, a.att.data(), Param(l, "self_attn.o_proj.weight"), datt.data(),
                  ParamGrad(l, "self_attn.o_proj.weight"), n, hh, d, false, linear_precision_);
  std::vector<T> dq(datt.size()), dk(datt.size()), dv(datt.size());
  cpu::AttentionBackward(datt.data(), a.q.data(), a.k.data(), a.v.data(), a.probs.data(), dq.data(),
                         dk.data(), dv.data(), b, s, h, hd, hd, 1.0 / std::sqrt(double(hd)));
  cpu::Rope(dq.data(), b, s, h, hd, spec_.rope_theta, true);
  cpu::Rope(dk.data(), b, s, h, hd, spec_.rope_theta, true);
  LinearBackwardP(dq.data(), a.n1.data(), Param(l, "self_attn.q_proj.weight"), dn,
                  ParamGrad(l, "self_attn.q_proj.weight"), n, d, hh, false, linear_precision_);
  LinearBackwardP(dk.data(), a.n1.data(), Param(l, "self_attn.k_proj.weight"), dn,
                  ParamGrad(l, "self_attn.k_proj.weight"), n, d, hh, true, linear_precision_);
  LinearBackwardP(dv.data(), a.n1.data(), Param(l, "self_attn.v_proj.weight"), dn,
                  ParamGrad(l, "self_attn.v_proj.weight"), n, d, hh, true, linear_precision_);
}

template <typename T>
Status ModelStage<T>::LayerBackward(int64_t l, LayerActivations<T>& a, double dloss, T* dh,
                                    int64_t b, int64_t s) {
  const int64_t n = b * s, d = spec_.d_model;
  // FFN half: out = mid + FFN(norm2(mid)).
  std::vector<T> dn(static_cast<size_t>(n * d)), dx(static_cast<size_t>(n * d));
  if (spec_.dense_layer(l)) {
    std::vector<T> scratch;
    MlpBackward(dh, a.n2.data(), n, d, Mlp(l, "mlp", spec_.ffn_hidden), a.g.data(), a.u.data(),
                a.a.data(), dn.data(), false, scratch);
  } else {
    std::vector<float> bias;
    MOERUN_RETURN_IF_ERROR(MoeBackward(dh, a.n2.data(), b, s, moe_shape_, Moe(l, &bias), a.moe,
                                       dloss, dn.data(), &ep_));
  }
  cpu::RmsNormBackward(dn.data(), a.mid.data(), Param(l, "post_attention_layernorm.weight"),
                       a.rstd2.data(), dx.data(), ParamGrad(l, "post_attention_layernorm.weight"),
                       n, d);
  for (int64_t i = 0; i < n * d; ++i) dh[i] += dx[i];  // dh is now d(mid)

  // Attention half: mid = x + attention(norm1(x)); dn is d(norm1 output).
  if (spec_.attention == AttentionKind::kMla) {
    MlaBackward(dh, a.n1.data(), b, s, mla_shape_, Mla(l), a.mla, dn.data(), false);
  } else {
    MhaBackward(l, a, dh, dn.data(), b, s);
  }
  cpu::RmsNormBackward(dn.data(), a.x.data(), Param(l, "input_layernorm.weight"), a.rstd1.data(),
                       dx.data(), ParamGrad(l, "input_layernorm.weight"), n, d);
  for (int64_t i = 0; i < n * d; ++i) dh[i] += dx[i];  // dh is now d(x)
  return Status::OK();
}

template <typename T>
void ModelStage<T>::UpdateBalanceBias(int64_t layer, const int64_t* counts, double gamma) {
  const int64_t e = spec_.moe.routed_experts;
  cpu::UpdateBalanceBias(counts, e, gamma, Param(layer, "mlp.gate.e_score_correction_bias"));
}

template class ModelStage<float>;
template class ModelStage<double>;
template struct StageActivations<float>;
template struct StageActivations<double>;

}  // namespace moerun::model
