// Mean next-token cross-entropy of a model over fixed windows (nats per token; balance
// losses excluded). Used for held-out evaluation during training and by `moerun eval`.
#pragma once

#include <cstdint>
#include <functional>

#include "worker/model/model_stage.h"

namespace moerun::trainer {

// window(k, inputs, targets) fills window k of `seq_len` tokens; windows run in batches of
// `batch` sequences through a whole-model stage. The multi-token prediction modules run only
// when `mtp_mean` is given (and the model has them): it gets the mean over windows of their
// mean cross-entropy.
Result<double> MeanCrossEntropy(model::ModelStage<float>& stage, int64_t windows, int64_t seq_len,
                                int64_t batch,
                                const std::function<void(int64_t, int32_t*, int32_t*)>& window,
                                double* mtp_mean = nullptr);

}  // namespace moerun::trainer
