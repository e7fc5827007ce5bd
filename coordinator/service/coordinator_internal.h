// Private to the coordinator's .cc files: peer kinds and small predicates they share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "coordinator/service/job_run.h"

namespace moerun::coordinator {

inline constexpr size_t kMaxNcclUniqueIdChars = 512;  // ncclUniqueId is 128 bytes: 256 in hex
inline constexpr char kWorkerPrefix[] = "worker:";
inline constexpr char kTrainerPrefix[] = "trainer:";

// How events name a step to restore: "step 50", or "the start" for 0.
inline std::string StepOrStart(int64_t step) {
  return step > 0 ? "step " + std::to_string(step) : "the start";
}

// Admitted and not ended: the job holds slots and its trainers matter.
inline bool Active(const JobRun& j) {
  return !IsTerminal(j.state.phase()) && j.state.phase() != JobPhase::kQueued;
}

}  // namespace moerun::coordinator
