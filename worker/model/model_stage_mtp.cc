// Multi-token prediction on the head stage (DeepSeek-V3 §2.2; docs/architecture.md §4.4).
// Module k (1-based) at position i < S - k of each sequence:
//   h'_i = eh_proj([enorm(Emb(t_{i+k-1})); hnorm(h^{k-1}_i)])   (t: targets, t_j = x_{j+1})
//   h^k  = block_k(h')                       one decoder layer, numbered n_layers + k - 1
//   loss_k = mean CE(lm_head(shared_head.norm(h^k_i)), t_{i+k})
// h^0 is the main model's output after model.norm (what inference engines that load the
// published DeepSeek-V3 MTP weights feed its hnorm); h^k for k >= 1 is block k's output. The
// embedding and the head are the main model's (on a pipeline's last stage, its copy of the
// embedding).
#include <algorithm>
#include <string>

#include "kernels/cpu/elementwise.h"
#include "worker/model/model_stage.h"
#include "worker/model/stage_activations.h"

namespace moerun::model {

namespace cpu = kernels::cpu;

namespace {

template <typename T>
void Resize(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}

// Rows [0, rows_out) of each of b sequences of `rows_in` rows of width d, packed.
template <typename T>
void FirstRows(const T* in, int64_t b, int64_t rows_in, int64_t rows_out, int64_t d, T* out) {
  for (int64_t bi = 0; bi < b; ++bi)
    std::copy_n(in + bi * rows_in * d, rows_out * d, out + bi * rows_out * d);
}

}  // namespace

template <typename T>
Status ModelStage<T>::MtpForward(StageActivations<T>& acts) {
  const int64_t b = acts.batch, s = acts.seq, d = spec_.d_model, v = spec_.vocab_size;
  const T* embed = params_->Find("model.embed_tokens.weight");
  const T* head = params_->Find("lm_head.weight");
  const T* prev = acts.final_norm.data();
  for (int64_t k = 1; k <= mtp_depth_; ++k) {
    const int64_t l = spec_.n_layers + k - 1, sk = s - k, nk = b * sk;
    // Kept from the slot's last micro-batch, as the layers' (ModelStage::Forward).
    if (acts.mtp.size() < size_t(k)) acts.mtp.push_back(std::make_unique<MtpActivations<T>>());
    MtpActivations<T>& a = *acts.mtp[size_t(k - 1)];
    Resize(a.ids, nk);
    Resize(a.targets, nk);
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t i = 0; i < sk; ++i) {
        a.ids[size_t(bi * sk + i)] = acts.targets[size_t(bi * s + i + k - 1)];
        a.targets[size_t(bi * sk + i)] = acts.targets[size_t(bi * s + i + k)];
      }
    }
    for (auto* buf : {&a.emb, &a.en, &a.h, &a.hn, &a.x, &a.out, &a.fnorm}) Resize(*buf, nk * d);
    for (auto* buf : {&a.en_rstd, &a.hn_rstd, &a.frstd}) Resize(*buf, nk);
    Resize(a.cat, nk * 2 * d);
    Resize(a.logits, nk * v);
    cpu::EmbeddingForward(embed, a.ids.data(), a.emb.data(), nk, d);
    cpu::RmsNormForward(a.emb.data(), Param(l, "enorm.weight"), a.en.data(), a.en_rstd.data(), nk,
                        d);
    // The previous depth ran on s - k + 1 positions per sequence; this one reads the first s - k.
    FirstRows(prev, b, sk + 1, sk, d, a.h.data());
    cpu::RmsNormForward(a.h.data(), Param(l, "hnorm.weight"), a.hn.data(), a.hn_rstd.data(), nk, d);
    for (int64_t i = 0; i < nk; ++i) {
      std::copy_n(a.en.data() + i * d, d, a.cat.data() + i * 2 * d);
      std::copy_n(a.hn.data() + i * d, d, a.cat.data() + i * 2 * d + d);
    }
    LinearForwardP(a.cat.data(), Param(l, "eh_proj.weight"), a.x.data(), nk, 2 * d, d,
                   linear_precision_);
    MOERUN_RETURN_IF_ERROR(LayerForward(l, a.block, a.x.data(), a.out.data(), b, sk));
    acts.balance_loss += a.block.moe.balance_loss;
    cpu::RmsNormForward(a.out.data(), Param(l, "shared_head.norm.weight"), a.fnorm.data(),
                        a.frstd.data(), nk, d);
    LinearForwardP(a.fnorm.data(), head, a.logits.data(), nk, d, v, head_precision_);
    a.loss = cpu::CrossEntropy<T>(a.logits.data(), a.targets.data(), nullptr, nk, v, 1.0);
    acts.mtp_loss += a.loss / double(mtp_depth_);
    prev = a.out.data();
  }
  return Status::OK();
}

template <typename T>
Status ModelStage<T>::MtpBackward(StageActivations<T>& acts, double dloss, T* dfinal) {
  const int64_t b = acts.batch, s = acts.seq, d = spec_.d_model, v = spec_.vocab_size;
  const double scale = dloss * spec_.mtp.loss_weight / double(mtp_depth_);
  T* dembed = params_->Grad("model.embed_tokens.weight");
  std::vector<T> dnext, dout, dlogits, dnorm, dcat, dpart, dprev;
  for (int64_t k = mtp_depth_; k >= 1; --k) {
    const int64_t l = spec_.n_layers + k - 1, sk = s - k, nk = b * sk;
    MtpActivations<T>& a = *acts.mtp[size_t(k - 1)];
    Resize(dlogits, nk * v);
    Resize(dnorm, nk * d);
    Resize(dout, nk * d);
    cpu::CrossEntropy<T>(a.logits.data(), a.targets.data(), dlogits.data(), nk, v, scale);
    LinearBackwardP(dlogits.data(), a.fnorm.data(), params_->Find("lm_head.weight"), dnorm.data(),
                    params_->Grad("lm_head.weight"), nk, d, v, false, head_precision_);
    cpu::RmsNormBackward(dnorm.data(), a.out.data(), Param(l, "shared_head.norm.weight"),
                         a.frstd.data(), dout.data(), ParamGrad(l, "shared_head.norm.weight"), nk,
                         d);
    // Module k + 1 read this module's first sk - 1 positions of each sequence.
    if (!dnext.empty()) {
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t i = 0; i < (sk - 1) * d; ++i)
          dout[size_t(bi * sk * d + i)] += dnext[size_t(bi * (sk - 1) * d + i)];
    }
    MOERUN_RETURN_IF_ERROR(LayerBackward(l, a.block, dloss, dout.data(), b, sk));
    Resize(dcat, nk * 2 * d);
    LinearBackwardP(dout.data(), a.cat.data(), Param(l, "eh_proj.weight"), dcat.data(),
                    ParamGrad(l, "eh_proj.weight"), nk, 2 * d, d, false, linear_precision_);
    // The embedding half: enorm, then the rows of the (shared) embedding.
    Resize(dpart, nk * d);
    Resize(dprev, nk * d);
    for (int64_t i = 0; i < nk; ++i) std::copy_n(dcat.data() + i * 2 * d, d, dpart.data() + i * d);
    cpu::RmsNormBackward(dpart.data(), a.emb.data(), Param(l, "enorm.weight"), a.en_rstd.data(),
                         dnorm.data(), ParamGrad(l, "enorm.weight"), nk, d);
    cpu::EmbeddingBackward(dnorm.data(), a.ids.data(), dembed, nk, d);
    // The hidden half: hnorm, then the previous depth's output.
    for (int64_t i = 0; i < nk; ++i)
      std::copy_n(dcat.data() + i * 2 * d + d, d, dpart.data() + i * d);
    cpu::RmsNormBackward(dpart.data(), a.h.data(), Param(l, "hnorm.weight"), a.hn_rstd.data(),
                         dprev.data(), ParamGrad(l, "hnorm.weight"), nk, d);
    dnext.swap(dprev);
  }
  // Module 1 read the main model's first s - 1 normed positions of each sequence.
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = 0; i < (s - 1) * d; ++i)
      dfinal[bi * s * d + i] += dnext[size_t(bi * (s - 1) * d + i)];
  return Status::OK();
}

template Status ModelStage<float>::MtpForward(StageActivations<float>&);
template Status ModelStage<double>::MtpForward(StageActivations<double>&);
template Status ModelStage<float>::MtpBackward(StageActivations<float>&, double, float*);
template Status ModelStage<double>::MtpBackward(StageActivations<double>&, double, double*);

}  // namespace moerun::model
