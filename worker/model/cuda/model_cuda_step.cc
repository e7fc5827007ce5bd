// ModelCuda's optimizer step (gradient norms, clipping, AdamW), aux-loss-free balancing, and
// its state as the host sees it (counts, losses, weights and moments to and from the host).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/router.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/cuda/model_cuda_internal.h"

namespace moerun::model::cuda {

namespace kc = moerun::kernels::cuda;
using model_cuda_internal::CopyOn;
using model_cuda_internal::Cuda;
using model_cuda_internal::LayerName;

template <typename T>
Result<double> ModelCuda<T>::Step(const kernels::cpu::AdamWStep& adam, double grad_clip) {
  auto sq = GradSquareSum();
  if (!sq.ok()) return sq.status();
  const double norm = std::sqrt(sq.value());
  MOERUN_RETURN_IF_ERROR(ApplyStep(adam, kernels::cpu::ClipFactor(norm, grad_clip)));
  return norm;
}

template <typename T>
Result<double> ModelCuda<T>::GradSquareSum() {
  if (norm_runs_[0] != runs_[0]) {  // a copy of the embedding the first stage counts
    auto dense = GradSquareSum(false), routed = GradSquareSum(true);
    if (!dense.ok()) return dense.status();
    if (!routed.ok()) return routed.status();
    return dense.value() + routed.value();
  }
  // Router biases get no gradient, so the whole buffer's sum is the trainable tensors' sum.
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchSumOfSquares(grads_, size_, partial_, norm_, stream_), "gradient norm"));
  double sq = 0;
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(&sq, norm_, sizeof(double), cudaMemcpyDeviceToHost, stream_), "norm"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "gradient norm"));
  return sq;
}

template <typename T>
Result<double> ModelCuda<T>::GradSquareSum(bool routed_experts) {
  // One reduction per run of adjacent tensors of the wanted kind.
  double sum = 0;
  for (const TensorRun& run : norm_runs_[routed_experts ? 1 : 0]) {
    MOERUN_RETURN_IF_ERROR(Cuda(
        kc::LaunchSumOfSquares(grads_ + run.offset, run.count, partial_, norm_, stream_), "norm"));
    double sq = 0;
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, &sq, norm_, sizeof(double), cudaMemcpyDeviceToHost), "gradient norm"));
    sum += sq;
  }
  return sum;
}

template <typename T>
Status ModelCuda<T>::ApplyStep(const kernels::cpu::AdamWStep& adam, double clip) {
  for (const auto& v : views_) {
    if (!v.info.trainable()) continue;
    float* g = grads_ + v.offset;
    if (clip != 1.0) {
      MOERUN_RETURN_IF_ERROR(Cuda(
          kc::LaunchScaleInPlace(g, v.info.numel(), static_cast<float>(clip), stream_), "clip"));
    }
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchAdamWUpdate(master_ + v.offset, g, m_ + v.offset, v_ + v.offset,
                                   v.info.numel(), adam, v.info.is_matrix(), stream_),
             "AdamW " + v.info.name));
  }
  MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(grads_, 0, size_ * sizeof(float), stream_), "zero"));
  if (fp8_) {  // new weights: the next Forward quantizes them
    fp8_stale_ = mtp_fp8_stale_ = true;
    for (auto* list : {&layers_, &mtp_layers_})
      for (auto& layer : *list)
        if (layer->moe) layer->moe->WeightsChanged();
  }
  if constexpr (!std::is_same_v<T, float>) {
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchCastFromFloat<T>(master_, compute_, size_, stream_), "compute copy"));
  }
  return Cuda(cudaStreamSynchronize(stream_), "step");
}

template <typename T>
Status ModelCuda<T>::UpdateBalanceBias(double gamma) {
  std::vector<std::vector<int64_t>> counts;
  for (int64_t j = 0; j < moe_layers(); ++j) {
    const int64_t* c = expert_counts(j);
    counts.emplace_back(c, c + spec_.moe.routed_experts);
  }
  return UpdateBalanceBias(gamma, counts);
}

template <typename T>
Status ModelCuda<T>::UpdateBalanceBias(double gamma,
                                       const std::vector<std::vector<int64_t>>& all_counts) {
  const int64_t e = spec_.moe.routed_experts;
  if (int64_t(all_counts.size()) != moe_layers()) {
    return Status::InvalidArgument("model on the GPU: expert counts for " +
                                   std::to_string(all_counts.size()) + " MoE layers, not " +
                                   std::to_string(moe_layers()));
  }
  std::vector<float> bias(static_cast<size_t>(e));
  // The stage's MoE layers are its last ones, then the MTP modules' blocks (n_layers + k − 1):
  // one run of global indices.
  const int64_t first_moe = range_.layer_end - MainMoeLayers();
  for (int64_t j = 0; j < moe_layers(); ++j) {
    const int64_t l = first_moe + j;
    float* dev = Master(LayerName(l, "mlp.gate.e_score_correction_bias"));
    const auto& layer_counts = all_counts[size_t(j)];
    if (int64_t(layer_counts.size()) != e) {
      return Status::InvalidArgument(
          "model on the GPU: expert counts of layer " + std::to_string(l) + " have " +
          std::to_string(layer_counts.size()) + " experts, not " + std::to_string(e));
    }
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, bias.data(), dev, e * sizeof(float), cudaMemcpyDeviceToHost), "bias"));
    kernels::cpu::UpdateBalanceBias(layer_counts.data(), e, gamma, bias.data());
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, dev, bias.data(), e * sizeof(float), cudaMemcpyHostToDevice), "bias"));
  }
  return Status::OK();
}

template <typename T>
double ModelCuda<T>::balance_loss() const {
  double sum = 0;
  for (const auto& layer : layers_)
    if (layer->moe) sum += layer->moe->balance_loss();
  for (const auto& layer : mtp_layers_)
    if (layer->moe && mtp_ran_) sum += layer->moe->balance_loss();
  return sum;
}

template <typename T>
const int64_t* ModelCuda<T>::expert_counts(int64_t j) const {
  const int64_t main = MainMoeLayers();
  if (j >= main) {  // an MTP module's block: its counts when the modules ran, else none
    return mtp_ran_ ? mtp_layers_[size_t(j - main)]->moe->expert_counts() : no_counts_.data();
  }
  return layers_[size_t(range_.layer_end - main + j - range_.layer_begin)]->moe->expert_counts();
}

template <typename T>
int64_t ModelCuda<T>::MainMoeLayers() const {
  if (spec_.moe_layers() == 0) return 0;
  return range_.layer_end - std::clamp(spec_.dense_layers, range_.layer_begin, range_.layer_end);
}

template <typename T>
int64_t ModelCuda<T>::moe_layers() const {
  // The MTP modules' blocks are MoE layers too (when the model has MoE layers), after the rest.
  return MainMoeLayers() + (spec_.moe_layers() > 0 ? int64_t(mtp_layers_.size()) : 0);
}

template <typename T>
Result<double> ModelCuda<T>::LossSum(int64_t tokens) const {
  if (!range_.has_head) {
    return Status::FailedPrecondition("model on the GPU: a stage without the head has no loss");
  }
  if (tokens < 0 || tokens > batch_ * seq_) {
    return Status::InvalidArgument("model on the GPU: loss of " + std::to_string(tokens) +
                                   " tokens from a batch of " + std::to_string(batch_ * seq_));
  }
  std::vector<float> rows(static_cast<size_t>(tokens));
  MOERUN_RETURN_IF_ERROR(Cuda(
      CopyOn(stream_, rows.data(), row_loss_, rows.size() * sizeof(float), cudaMemcpyDeviceToHost),
      "per-token loss"));
  double sum = 0;
  for (float r : rows) sum += double(r);
  return sum;
}

template <typename T>
Status ModelCuda<T>::DownloadState(std::vector<float>* values, std::vector<float>* m,
                                   std::vector<float>* v) const {
  MOERUN_RETURN_IF_ERROR(Download(values, nullptr));
  for (auto [host, dev] : {std::pair<std::vector<float>*, const float*>{m, m_}, {v, v_}}) {
    host->resize(static_cast<size_t>(size_));
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, host->data(), dev, size_ * sizeof(float), cudaMemcpyDeviceToHost),
             "downloading AdamW moments"));
  }
  return Status::OK();
}

template <typename T>
Status ModelCuda<T>::UploadMoments(const std::vector<float>& m, const std::vector<float>& v) {
  if (int64_t(m.size()) != size_ || int64_t(v.size()) != size_) {
    return Status::InvalidArgument("model on the GPU: AdamW moments of " +
                                   std::to_string(m.size()) + " values for a model of " +
                                   std::to_string(size_));
  }
  for (auto [host, dev] : {std::pair<const std::vector<float>*, float*>{&m, m_}, {&v, v_}}) {
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, dev, host->data(), size_ * sizeof(float), cudaMemcpyHostToDevice),
             "uploading AdamW moments"));
  }
  return Status::OK();
}

template <typename T>
Status ModelCuda<T>::Download(std::vector<float>* values, std::vector<float>* grads) const {
  if (values) {
    values->resize(static_cast<size_t>(size_));
    MOERUN_RETURN_IF_ERROR(Cuda(
        CopyOn(stream_, values->data(), master_, size_ * sizeof(float), cudaMemcpyDeviceToHost),
        "downloading weights"));
  }
  if (grads) {
    grads->resize(static_cast<size_t>(size_));
    MOERUN_RETURN_IF_ERROR(
        Cuda(CopyOn(stream_, grads->data(), grads_, size_ * sizeof(float), cudaMemcpyDeviceToHost),
             "downloading gradients"));
  }
  return Status::OK();
}

template class ModelCuda<float>;
template class ModelCuda<__nv_bfloat16>;

}  // namespace moerun::model::cuda
