#include "worker/trainer/evaluate.h"

#include <algorithm>
#include <vector>

namespace moerun::trainer {

Result<double> MeanCrossEntropy(model::ModelStage<float>& stage, int64_t windows, int64_t seq_len,
                                int64_t batch,
                                const std::function<void(int64_t, int32_t*, int32_t*)>& window,
                                double* mtp_mean) {
  if (windows <= 0) return 0.0;
  const bool was = stage.mtp_enabled();
  stage.set_mtp_enabled(mtp_mean != nullptr);
  double mtp_total = 0;
  model::StageActivations<float> acts;
  std::vector<int32_t> inputs, targets;
  double total = 0;
  for (int64_t first = 0; first < windows; first += batch) {
    const int64_t b = std::min(batch, windows - first);
    inputs.resize(static_cast<size_t>(b * seq_len));
    targets.resize(inputs.size());
    for (int64_t i = 0; i < b; ++i) {
      window(first + i, inputs.data() + i * seq_len, targets.data() + i * seq_len);
    }
    auto loss = stage.Forward(acts, inputs.data(), nullptr, targets.data(), b, seq_len, nullptr);
    if (!loss.ok()) {
      stage.set_mtp_enabled(was);
      return loss.status();
    }
    total += loss.value() * double(b);
    mtp_total += acts.mtp_loss * double(b);
  }
  stage.set_mtp_enabled(was);
  if (mtp_mean != nullptr) *mtp_mean = mtp_total / double(windows);
  return total / double(windows);
}

}  // namespace moerun::trainer
