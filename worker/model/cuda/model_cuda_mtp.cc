// ModelCuda's multi-token prediction on the head stage (docs/architecture.md §4.4), the GPU twin
// of worker/model/model_stage_mtp.cc, step for step in the CPU's order. Module k runs on the
// first seq − k positions of each sequence: h'_i = eh_proj([enorm(Emb(t_{i+k−1}));
// hnorm(h^{k−1}_i)]), one decoder block (layer n_layers + k − 1, its buffers sized like the
// main layers'), shared_head.norm and the main model's lm_head against t_{i+k}. h^0 is fnorm_
// (the main model's output after model.norm), h^k block k's output.
#include <algorithm>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm.cuh"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/cuda/model_cuda_internal.h"

namespace moerun::model::cuda {

namespace kc = moerun::kernels::cuda;
using model_cuda_internal::Blas;
using model_cuda_internal::Copy2D;
using model_cuda_internal::Cuda;
using model_cuda_internal::LayerName;

template <typename T>
typename ModelCuda<T>::Layer& ModelCuda<T>::LayerAt(int64_t l) const {
  if (l >= spec_.n_layers) return *mtp_layers_[size_t(l - spec_.n_layers)];
  return *layers_[size_t(l - range_.layer_begin)];
}

template <typename T>
Status ModelCuda<T>::AllocateMtp() {
  if (!range_.has_head || spec_.mtp.depth == 0) return Status::OK();
  const int64_t n = batch_ * seq_, d = spec_.d_model, v = spec_.vocab_size;
  dfnorm_ = Alloc<T>(n * d);
  dcat_ = Alloc<T>(n * 2 * d);
  dprev_ = Alloc<T>(n * d);
  no_counts_.assign(size_t(std::max<int64_t>(spec_.moe.routed_experts, 1)), 0);
  for (int64_t k = 1; k <= spec_.mtp.depth; ++k) {
    const int64_t l = spec_.n_layers + k - 1, nk = batch_ * (seq_ - k);
    mtp_layers_.push_back(std::make_unique<Layer>());
    MOERUN_RETURN_IF_ERROR(AllocateLayer(l, *mtp_layers_.back()));
    if (fp8_) {
      auto w = fp8_->NewWeight(d, 2 * d);
      if (!w.ok()) return w.status();
      mtp_layers_.back()->fp8_w["eh_proj.weight"] = w.value();
    }
    auto m = std::make_unique<MtpModule>();
    m->k = k;
    m->host_ids.resize(size_t(nk));
    m->host_targets.resize(size_t(nk));
    m->ids = Alloc<int32_t>(nk);
    m->targets = Alloc<int32_t>(nk);
    for (T** buf : {&m->emb, &m->en, &m->h, &m->hn, &m->x, &m->out, &m->fnorm})
      *buf = Alloc<T>(nk * d);
    m->cat = Alloc<T>(nk * 2 * d);
    m->logits = Alloc<T>(nk * v);
    for (float** buf : {&m->en_rstd, &m->hn_rstd, &m->frstd, &m->row_loss}) *buf = Alloc<float>(nk);
    m->loss = Alloc<double>(1);
    mtp_.push_back(std::move(m));
  }
  return Status::OK();
}

template <typename T>
Status ModelCuda<T>::MtpForward(const int32_t* targets) {
  const int64_t b = batch_, s = seq_, d = spec_.d_model, v = spec_.vocab_size;
  const T* prev = fnorm_;
  for (auto& mp : mtp_) {
    MtpModule& m = *mp;
    const int64_t k = m.k, l = spec_.n_layers + k - 1, sk = s - k, nk = b * sk;
    auto P = [&](const char* name) { return W(LayerName(l, name)); };
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t i = 0; i < sk; ++i) {
        m.host_ids[size_t(bi * sk + i)] = targets[bi * s + i + k - 1];
        m.host_targets[size_t(bi * sk + i)] = targets[bi * s + i + k];
      }
    }
    MOERUN_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(m.ids, m.host_ids.data(), nk * sizeof(int32_t),
                                                cudaMemcpyHostToDevice, stream_),
                                "MTP ids"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(m.targets, m.host_targets.data(), nk * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_),
             "MTP targets"));
    MOERUN_RETURN_IF_ERROR(Cuda(
        kc::LaunchEmbeddingForward<T>(W("model.embed_tokens.weight"), m.ids, m.emb, nk, d, stream_),
        "MTP embedding"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormForward<T>(m.emb, P("enorm.weight"), m.en, m.en_rstd, nk, d, stream_),
             "enorm"));
    // The previous depth ran on sk + 1 positions per sequence; this one reads the first sk (one
    // copy per sequence: a 2-D copy's pitch is bounded, and sequences may be long).
    for (int64_t bi = 0; bi < b; ++bi) {
      MOERUN_RETURN_IF_ERROR(
          Cuda(cudaMemcpyAsync(m.h + bi * sk * d, prev + bi * (sk + 1) * d,
                               size_t(sk * d) * sizeof(T), cudaMemcpyDeviceToDevice, stream_),
               "MTP hidden rows"));
    }
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormForward<T>(m.h, P("hnorm.weight"), m.hn, m.hn_rstd, nk, d, stream_),
             "hnorm"));
    MOERUN_RETURN_IF_ERROR(Cuda(Copy2D(m.cat, 2 * d, m.en, d, d, nk, stream_), "[enorm; ]"));
    MOERUN_RETURN_IF_ERROR(Cuda(Copy2D(m.cat + d, 2 * d, m.hn, d, d, nk, stream_), "[; hnorm]"));
    seq_now_ = sk;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (fp8_ && mtp_fp8_stale_) {  // the module's linears, eh_proj and its block's, once a step
        for (const auto& [name, w] : LayerAt(l).fp8_w)
          MOERUN_RETURN_IF_ERROR(fp8_->Quantize(Master(LayerName(l, name)), w));
      }
    }
    MOERUN_RETURN_IF_ERROR(Linear(l, "eh_proj.weight", m.cat, m.x, 2 * d, d));
    MOERUN_RETURN_IF_ERROR(LayerForward(l, m.x, m.out));
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchRmsNormForward<T>(m.out, P("shared_head.norm.weight"),
                                                            m.fnorm, m.frstd, nk, d, stream_),
                                "shared_head.norm"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearForward<T>(handle_, m.fnorm, W("lm_head.weight"), m.logits, nk, d, v),
             "MTP head"));
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchCrossEntropy<T>(m.logits, m.targets, nullptr, m.row_loss,
                                                          m.loss, nk, v, 1.0, stream_),
                                "MTP cross-entropy"));
    prev = m.out;
  }
  seq_now_ = seq_;
  mtp_fp8_stale_ = false;
  mtp_loss_ = 0;
  for (auto& mp : mtp_) {
    double loss = 0;
    MOERUN_RETURN_IF_ERROR(Cuda(
        cudaMemcpyAsync(&loss, mp->loss, sizeof(double), cudaMemcpyDeviceToHost, stream_), "loss"));
    MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "MTP forward"));
    mtp_loss_ += loss / double(mtp_.size());
  }
  return Status::OK();
}

template <typename T>
Status ModelCuda<T>::MtpBackward(double dloss) {
  const int64_t b = batch_, s = seq_, d = spec_.d_model, v = spec_.vocab_size;
  const double scale = dloss * spec_.mtp.loss_weight / double(mtp_.size());
  for (auto it = mtp_.rbegin(); it != mtp_.rend(); ++it) {
    MtpModule& m = **it;
    const int64_t k = m.k, l = spec_.n_layers + k - 1, sk = s - k, nk = b * sk;
    auto P = [&](const char* name) { return W(LayerName(l, name)); };
    auto PG = [&](const char* name) { return G(LayerName(l, name)); };
    MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchCrossEntropy<T>(m.logits, m.targets, dlogits_, m.row_loss,
                                                          m.loss, nk, v, scale, stream_),
                                "MTP cross-entropy backward"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearBackward<T>(handle_, dlogits_, m.fnorm, W("lm_head.weight"), dn_,
                                   G("lm_head.weight"), nk, d, v, false),
             "MTP head backward"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormBackward<T>(dn_, m.out, P("shared_head.norm.weight"), m.frstd, dh_,
                                          PG("shared_head.norm.weight"), nk, d, stream_),
             "shared_head.norm backward"));
    // Module k + 1 read this module's first sk − 1 positions of each sequence.
    if (k < int64_t(mtp_.size())) {
      for (int64_t bi = 0; bi < b; ++bi) {
        MOERUN_RETURN_IF_ERROR(
            Cuda(kc::LaunchAddInPlace<T>(dh_ + bi * sk * d, dprev_ + bi * (sk - 1) * d,
                                         (sk - 1) * d, stream_),
                 "d(MTP hidden)"));
      }
    }
    seq_now_ = sk;
    MOERUN_RETURN_IF_ERROR(LayerBackward(l, m.x, dloss));
    MOERUN_RETURN_IF_ERROR(LinearGrad(l, "eh_proj.weight", dh_, m.cat, dcat_, 2 * d, d, false));
    // The embedding half: enorm, then the rows of the (shared) embedding.
    MOERUN_RETURN_IF_ERROR(Cuda(Copy2D(dn_, d, dcat_, 2 * d, d, nk, stream_), "d(enorm)"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormBackward<T>(dn_, m.emb, P("enorm.weight"), m.en_rstd, dx_,
                                          PG("enorm.weight"), nk, d, stream_),
             "enorm backward"));
    MOERUN_RETURN_IF_ERROR(Cuda(
        kc::LaunchEmbeddingBackward<T>(dx_, m.ids, G("model.embed_tokens.weight"), nk, d, stream_),
        "MTP embedding backward"));
    // The hidden half: hnorm, then the previous depth's output.
    MOERUN_RETURN_IF_ERROR(Cuda(Copy2D(dn_, d, dcat_ + d, 2 * d, d, nk, stream_), "d(hnorm)"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchRmsNormBackward<T>(dn_, m.h, P("hnorm.weight"), m.hn_rstd, dprev_,
                                          PG("hnorm.weight"), nk, d, stream_),
             "hnorm backward"));
  }
  seq_now_ = seq_;
  // Module 1 read the main model's first s − 1 normed positions of each sequence.
  for (int64_t bi = 0; bi < b; ++bi) {
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchAddInPlace<T>(dfnorm_ + bi * s * d, dprev_ + bi * (s - 1) * d, (s - 1) * d,
                                     stream_),
             "d(final norm) from MTP"));
  }
  return Status::OK();
}

template class ModelCuda<float>;
template class ModelCuda<__nv_bfloat16>;

}  // namespace moerun::model::cuda
