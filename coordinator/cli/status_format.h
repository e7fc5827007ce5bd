// Text for people from the coordinator's JSON answers: the jobs and workers tables of
// `moerun status`, one job's detail, its events. Scripts use --json instead. Pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moerun::cli {

// color: ANSI colours for a terminal — unhealthy workers (late: red-yellow, dead: red),
// failed jobs red, recovering yellow. Without it the same text, plain.
std::string FormatStatus(const nlohmann::json& status, int64_t now_ms, bool color = false);
std::string FormatJob(const nlohmann::json& job, int64_t now_ms, bool color = false);
// "[##########----------]  50%" for step/total, `width` characters between the brackets.
std::string ProgressBar(int64_t step, int64_t total, int width);
std::string FormatEvents(const nlohmann::json& events);
// "step 120/300  loss 2.4100  5300 tok/s  ETA 34s" from a job summary.
std::string FormatProgress(const nlohmann::json& job);

}  // namespace moerun::cli
