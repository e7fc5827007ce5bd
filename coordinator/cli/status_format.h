// Text for people from the coordinator's JSON answers: the jobs and workers tables of
// `moerun status`, one job's detail, its events. Scripts use --json instead. Pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moerun::cli {

std::string FormatStatus(const nlohmann::json& status, int64_t now_ms);
std::string FormatJob(const nlohmann::json& job, int64_t now_ms);
std::string FormatEvents(const nlohmann::json& events);
// "step 120/300  loss 2.4100  5300 tok/s  ETA 34s" from a job summary.
std::string FormatProgress(const nlohmann::json& job);

}  // namespace moerun::cli
