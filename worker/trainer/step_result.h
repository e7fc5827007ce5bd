// What one optimizer step reports, the same on every rank and on either backend.
#pragma once

#include <cstdint>
#include <vector>

namespace moerun::trainer {

struct StepResult {
  double loss = 0;          // mean cross-entropy over the step's sequences
  double balance_loss = 0;  // mean sequence-wise balance loss, summed over MoE layers
  double mtp_loss = 0;      // mean over MTP modules of their cross-entropy (model.mtp.depth > 0)
  double grad_norm = 0;     // before clipping
  double lr = 0;
  // Tokens per expert in every MoE layer of the model (not only this stage's), by layer; the
  // MTP modules' MoE blocks last.
  std::vector<std::vector<int64_t>> expert_load;
};

}  // namespace moerun::trainer
