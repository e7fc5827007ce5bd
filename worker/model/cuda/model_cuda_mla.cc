// ModelCuda's multi-head latent attention (docs/architecture.md §4; the CPU twin is
// worker/model/mla_block.h, computed in the same order): q_a_proj, its norm and q_b_proj (or
// q_proj), kv_a_proj_with_mqa split into the latent and the shared RoPE key, the latent's norm
// and kv_b_proj, interleaved RoPE, the MLA attention core (kernels/cuda/mla_attention.cuh) and
// o_proj.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/mla_attention.cuh"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/cuda/model_cuda_internal.h"

namespace moerun::model::cuda {

namespace kc = moerun::kernels::cuda;
using model_cuda_internal::Copy2D;
using model_cuda_internal::Cuda;
using model_cuda_internal::LayerName;

namespace {

// MLA's sizes (worker/model/mla_block.h), shared with the CPU layer.
MlaShape Sizes(const ModelSpec& spec) { return MlaShapeFor(spec, GemmPrecision::kFp32); }

kc::MlaDimsCuda Dims(const MlaShape& m) { return {m.heads, m.nope, m.rope, m.v}; }

}  // namespace

template <typename T>
void ModelCuda<T>::AllocateMla(Layer& layer) {
  const MlaShape w = Sizes(spec_);
  const int64_t n = batch_ * seq_, qr = w.q_lora_rank, kr = w.kv_lora_rank, dr = w.rope;
  if (qr > 0) {
    layer.qa = Alloc<T>(n * qr);
    layer.qa_norm = Alloc<T>(n * qr);
    layer.qa_rstd = Alloc<float>(n);
  }
  layer.q = Alloc<T>(n * w.q_width());
  layer.ckv = Alloc<T>(n * kr);
  layer.ckv_norm = Alloc<T>(n * kr);
  layer.ckv_rstd = Alloc<float>(n);
  layer.kpe = Alloc<T>(n * dr);
  layer.kv = Alloc<T>(n * w.kv_width());
  layer.att = Alloc<T>(n * w.out_width());
  if (kva_ == nullptr) {  // scratch the stage's MLA layers share
    kva_ = Alloc<T>(n * w.latent_width());
    dlat_ = Alloc<T>(n * std::max(kr, qr));
    dlat_in_ = Alloc<T>(n * std::max(kr, qr));
  }
}

template <typename T>
std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> ModelCuda<T>::MlaLinears() const {
  const MlaShape w = Sizes(spec_);
  const int64_t d = w.d_model, qr = w.q_lora_rank, kr = w.kv_lora_rank;
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> out;  // name, {out, in}
  if (qr > 0) {
    out.push_back({"self_attn.q_a_proj.weight", {qr, d}});
    out.push_back({"self_attn.q_b_proj.weight", {w.q_width(), qr}});
  } else {
    out.push_back({"self_attn.q_proj.weight", {w.q_width(), d}});
  }
  out.push_back({"self_attn.kv_a_proj_with_mqa.weight", {w.latent_width(), d}});
  out.push_back({"self_attn.kv_b_proj.weight", {w.kv_width(), kr}});
  out.push_back({"self_attn.o_proj.weight", {d, w.out_width()}});
  return out;
}

template <typename T>
Status ModelCuda<T>::MlaForward(int64_t l, Layer& a) {
  const MlaShape w = Sizes(spec_);
  const int64_t n = batch_ * seq_now_, d = w.d_model, h = w.heads, qr = w.q_lora_rank,
                kr = w.kv_lora_rank, dn = w.nope, dr = w.rope;
  const double theta = spec_.rope_theta;
  auto P = [&](const char* s) { return W(LayerName(l, s)); };
  if (qr > 0) {
    MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.q_a_proj.weight", a.n1, a.qa, d, qr));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormForward<T>(a.qa, P("self_attn.q_a_layernorm.weight"), a.qa_norm,
                                         a.qa_rstd, n, qr, stream_),
             "q_a norm"));
    MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.q_b_proj.weight", a.qa_norm, a.q, qr, w.q_width()));
  } else {
    MOERUN_RETURN_IF_ERROR(Linear(l, "self_attn.q_proj.weight", a.n1, a.q, d, w.q_width()));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRopeInterleaved<T>(a.q + dn, batch_, seq_now_, h, w.q_width(), dn + dr, dr,
                                        theta, false, stream_),
           "rope q"));
  // The latent and the shared RoPE key come out of one projection; each is kept contiguous.
  MOERUN_RETURN_IF_ERROR(
      Linear(l, "self_attn.kv_a_proj_with_mqa.weight", a.n1, kva_, d, w.latent_width()));
  MOERUN_RETURN_IF_ERROR(Cuda(Copy2D(a.ckv, kr, kva_, w.latent_width(), kr, n, stream_), "latent"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(Copy2D(a.kpe, dr, kva_ + kr, w.latent_width(), dr, n, stream_), "k_pe"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRopeInterleaved<T>(a.kpe, batch_, seq_now_, 1, dr, dr, dr, theta, false, stream_),
      "rope k_pe"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRmsNormForward<T>(a.ckv, P("self_attn.kv_a_layernorm.weight"), a.ckv_norm,
                                       a.ckv_rstd, n, kr, stream_),
           "latent norm"));
  MOERUN_RETURN_IF_ERROR(
      Linear(l, "self_attn.kv_b_proj.weight", a.ckv_norm, a.kv, kr, w.kv_width()));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchMlaAttentionForward<T>(a.q, a.kv, a.kpe, a.att, a.probs, batch_, seq_now_,
                                            Dims(w), w.scale(), stream_),
           "mla attention"));
  return Linear(l, "self_attn.o_proj.weight", a.att, a.mid, w.out_width(), d, true);
}

template <typename T>
Status ModelCuda<T>::MlaBackward(int64_t l, Layer& a) {
  const MlaShape w = Sizes(spec_);
  const int64_t n = batch_ * seq_now_, d = w.d_model, h = w.heads, qr = w.q_lora_rank,
                kr = w.kv_lora_rank, dn = w.nope, dr = w.rope;
  const double theta = spec_.rope_theta;
  auto P = [&](const char* s) { return W(LayerName(l, s)); };
  auto PG = [&](const char* s) { return G(LayerName(l, s)); };
  T *dkv = dk_, *dkpe = dv_;
  MOERUN_RETURN_IF_ERROR(
      LinearGrad(l, "self_attn.o_proj.weight", dh_, a.att, datt_, w.out_width(), d, false));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchMlaAttentionBackward<T>(datt_, a.q, a.kv, a.kpe, a.probs, ds_, dq_, dkv, dkpe,
                                             batch_, seq_now_, Dims(w), w.scale(), stream_),
           "mla attention backward"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRopeInterleaved<T>(dq_ + dn, batch_, seq_now_, h, w.q_width(), dn + dr, dr,
                                        theta, true, stream_),
           "rope dq"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRopeInterleaved<T>(dkpe, batch_, seq_now_, 1, dr, dr, dr, theta, true, stream_),
      "rope dk_pe"));
  // Keys and values: kv_b_proj, the latent's norm, then kv_a_proj from [dlatent, dk_pe].
  MOERUN_RETURN_IF_ERROR(
      LinearGrad(l, "self_attn.kv_b_proj.weight", dkv, a.ckv_norm, dlat_, kr, w.kv_width(), false));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRmsNormBackward<T>(dlat_, a.ckv, P("self_attn.kv_a_layernorm.weight"), a.ckv_rstd,
                                   dlat_in_, PG("self_attn.kv_a_layernorm.weight"), n, kr, stream_),
      "latent norm backward"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(Copy2D(kva_, w.latent_width(), dlat_in_, kr, kr, n, stream_), "dlatent"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(Copy2D(kva_ + kr, w.latent_width(), dkpe, dr, dr, n, stream_), "dk_pe"));
  MOERUN_RETURN_IF_ERROR(LinearGrad(l, "self_attn.kv_a_proj_with_mqa.weight", kva_, a.n1, dn_, d,
                                    w.latent_width(), false));
  // Queries.
  if (qr > 0) {
    MOERUN_RETURN_IF_ERROR(
        LinearGrad(l, "self_attn.q_b_proj.weight", dq_, a.qa_norm, dlat_, qr, w.q_width(), false));
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormBackward<T>(
                                    dlat_, a.qa, P("self_attn.q_a_layernorm.weight"), a.qa_rstd,
                                    dlat_in_, PG("self_attn.q_a_layernorm.weight"), n, qr, stream_),
                                "q_a norm backward"));
    return LinearGrad(l, "self_attn.q_a_proj.weight", dlat_in_, a.n1, dn_, d, qr, true);
  }
  return LinearGrad(l, "self_attn.q_proj.weight", dq_, a.n1, dn_, d, w.q_width(), true);
}

template class ModelCuda<float>;
template class ModelCuda<__nv_bfloat16>;

}  // namespace moerun::model::cuda
