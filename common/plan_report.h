// Rendering a JobPlan for people (aligned text) and scripts (JSON). The JSON keys are part
// of the CLI's interface: add keys, never rename them. Units are in the key names.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/job_plan.h"
#include "common/job_spec.h"

namespace moerun {

struct PlanReportOptions {
  bool every_rank = false;  // text: one line per rank instead of one per stage
  std::optional<RunCost> cost;
  double peak_tflops = 0, mfu = 0, tokens = 0;  // the inputs of `cost`
};

std::string PlanText(const JobSpec& spec, const JobPlan& plan, const PlanReportOptions& opts);
nlohmann::json PlanJson(const JobSpec& spec, const JobPlan& plan, const PlanReportOptions& opts);

// 1234567 -> "1.23M"; 6.71e11 -> "671.03B".
std::string HumanCount(double n);
// Bytes -> "1.50 GiB".
std::string HumanBytes(double bytes);

}  // namespace moerun
