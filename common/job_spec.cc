#include "common/job_spec.h"

namespace moerun {

std::string_view ToString(AttentionKind v) { return v == AttentionKind::kMla ? "mla" : "mha"; }
std::string_view ToString(ScoreFunc v) { return v == ScoreFunc::kSoftmax ? "softmax" : "sigmoid"; }
std::string_view ToString(PipelineSchedule v) {
  switch (v) {
    case PipelineSchedule::kGpipe:
      return "gpipe";
    case PipelineSchedule::kOneFOneB:
      return "1f1b";
    case PipelineSchedule::kDualPipe:
      return "dualpipe";
  }
  return "?";
}
std::string_view ToString(Precision v) {
  switch (v) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp8:
      return "fp8";
  }
  return "?";
}
std::string_view ToString(DataFormat v) { return v == DataFormat::kTokens ? "tokens" : "text"; }
std::string_view ToString(Backend v) { return v == Backend::kCuda ? "cuda" : "cpu"; }

int64_t ModelSpec::qk_head_dim() const {
  if (attention == AttentionKind::kMla) return qk_nope_head_dim + qk_rope_head_dim;
  return n_heads > 0 ? d_model / n_heads : 0;
}

int64_t ModelSpec::v_head_dim_effective() const {
  if (attention == AttentionKind::kMla) return v_head_dim;
  return n_heads > 0 ? d_model / n_heads : 0;
}

}  // namespace moerun
