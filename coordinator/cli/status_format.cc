#include "coordinator/cli/status_format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <vector>

#include "common/duration_text.h"

namespace moerun::cli {
namespace {

// Columns padded to their widest cell; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) {
    rows_.push_back(std::move(header));
    colours_.push_back(nullptr);
  }
  void Row(std::vector<std::string> r, const char* colour = nullptr) {
    rows_.push_back(std::move(r));
    colours_.push_back(colour);
  }
  std::string Render(bool color = false) const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_)
      for (size_t c = 0; c < r.size() && c < width.size(); ++c)
        width[c] = std::max(width[c], r[c].size());
    std::string out;
    for (size_t i = 0; i < rows_.size(); ++i) {
      const auto& r = rows_[i];
      std::string line;
      for (size_t c = 0; c < r.size(); ++c) {
        line += r[c];
        if (c + 1 < r.size()) line += std::string(width[c] - r[c].size() + 2, ' ');
      }
      out += Paint(line, colours_[i], color) + "\n";
    }
    return out;
  }

 private:
  static std::string Paint(const std::string& line, const char* colour, bool color) {
    if (!color || colour == nullptr) return line;
    return colour + line + "\033[0m";
  }
  std::vector<std::vector<std::string>> rows_;
  std::vector<const char*> colours_;
};

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Num(const nlohmann::json& j, const char* key, int digits) {
  return j.contains(key) && j[key].is_number() ? Fixed(j[key].get<double>(), digits) : "-";
}

std::string WallTime(int64_t ms) {
  const std::time_t t = ms / 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

constexpr const char* kRed = "\033[1;31m";
constexpr const char* kYellow = "\033[1;33m";
constexpr const char* kGreen = "\033[32m";

const char* PhaseColour(const std::string& phase) {
  if (phase == "FAILED") return kRed;
  if (phase == "RECOVERING" || phase == "STARTING") return kYellow;
  if (phase == "SUCCEEDED") return kGreen;
  return nullptr;
}

}  // namespace

std::string ProgressBar(int64_t step, int64_t total, int width) {
  const double f = total > 0 ? std::clamp(double(step) / double(total), 0.0, 1.0) : 0.0;
  const int filled = int(std::lround(f * width));
  char pct[16];
  std::snprintf(pct, sizeof pct, " %3d%%", int(std::floor(f * 100)));
  return "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '-') + "]" +
         pct;
}

std::string FormatProgress(const nlohmann::json& j) {
  std::string out = "step " + std::to_string(j.value("step", int64_t(0))) + "/" +
                    std::to_string(j.value("total_steps", int64_t(0)));
  if (j.contains("loss")) out += "  loss " + Num(j, "loss", 4);
  if (j.contains("mtp_loss")) out += "  mtp " + Num(j, "mtp_loss", 4);
  if (j.contains("tokens_per_s")) out += "  " + Num(j, "tokens_per_s", 0) + " tok/s";
  if (j.contains("eta_s")) out += "  ETA " + DurationText(j["eta_s"].get<double>());
  return out;
}

std::string FormatStatus(const nlohmann::json& status, int64_t now_ms, bool color) {
  std::string out;
  const auto& jobs = status.at("jobs");
  if (jobs.empty()) {
    out += "no jobs\n";
  } else {
    Table t({"JOB", "STATE", "GEN", "PROGRESS", "STEP", "LOSS", "TOK/S", "ETA", "RESTARTS", "AGE",
             "WORKERS"});
    for (const auto& j : jobs) {
      std::string workers;
      for (const auto& w : j.value("workers", nlohmann::json::array()))
        workers += (workers.empty() ? "" : ",") + w.get<std::string>();
      const std::string phase = j.value("phase", "");
      t.Row({j.value("job_id", ""), phase, std::to_string(j.value("generation", 0)),
             ProgressBar(j.value("step", int64_t(0)), j.value("total_steps", int64_t(0)), 20),
             std::to_string(j.value("step", 0)) + "/" + std::to_string(j.value("total_steps", 0)),
             Num(j, "loss", 4), Num(j, "tokens_per_s", 0),
             j.contains("eta_s") ? DurationText(j["eta_s"].get<double>()) : "-",
             std::to_string(j.value("restarts", 0)),
             DurationText(double(now_ms - j.value("submitted_ms", now_ms)) / 1000.0),
             workers.empty() ? "-" : workers},
            PhaseColour(phase));
    }
    out += t.Render(color);
  }
  out += "\n";
  const auto& workers = status.at("workers");
  if (workers.empty()) {
    out += "no workers\n";
  } else {
    Table t({"WORKER", "HOST", "BACKEND", "SLOTS", "TRAINERS", "FAILURES", "HEALTH", "HEARTBEAT"});
    int unhealthy = 0;
    for (const auto& w : workers) {
      const int64_t age = w.value("heartbeat_age_ms", int64_t(-1));
      // Older coordinators send no health: alive or dead is all there is.
      const std::string health =
          w.value("health", std::string(w.value("alive", false) ? "ok" : "dead"));
      const bool ok = health == "ok";
      unhealthy += ok ? 0 : 1;
      std::string shown = health;
      std::transform(shown.begin(), shown.end(), shown.begin(),
                     [ok](char c) { return ok ? c : char(std::toupper(c)); });
      t.Row({w.value("worker", ""), w.value("host", ""), w.value("backend", ""),
             std::to_string(w.value("used", 0)) + "/" + std::to_string(w.value("devices", 0)),
             std::to_string(w.value("trainers", 0)), std::to_string(w.value("trainer_failures", 0)),
             shown, age >= 0 ? Fixed(double(age) / 1000.0, 1) + "s ago" : "-"},
            ok                 ? nullptr
            : health == "late" ? kYellow
                               : kRed);
    }
    out += t.Render(color);
    if (unhealthy > 0)
      out += std::to_string(unhealthy) +
             " unhealthy worker(s): LATE silent past half the heartbeat timeout, DEAD "
             "timed out (its jobs restart elsewhere)\n";
  }
  return out;
}

std::string FormatJob(const nlohmann::json& j, int64_t now_ms, bool color) {
  std::string out =
      "job        " + j.value("job_id", "") + "\n" + "state      " + j.value("phase", "") +
      " (generation " + std::to_string(j.value("generation", 0)) + ", " +
      std::to_string(j.value("restarts", 0)) + " restarts, " +
      std::to_string(j.value("lost_steps", 0)) + " steps redone)\n" + "checkpoint " +
      (j.value("committed_step", 0) > 0
           ? "step " + std::to_string(j.value("committed_step", 0)) + " committed"
           : std::string("none committed yet")) +
      (j.value("memory_step", 0) > 0
           ? "; in memory on every rank's host: step " + std::to_string(j.value("memory_step", 0))
           : std::string()) +
      "\n" + "progress   " +
      ProgressBar(j.value("step", int64_t(0)), j.value("total_steps", int64_t(0)), 30) + "  " +
      FormatProgress(j) + "\n";
  if (j.contains("val_loss")) out += "held-out   " + Num(j, "val_loss", 4) + "\n";
  out += "submitted  " + WallTime(j.value("submitted_ms", now_ms)) + "\n";
  out += "run dir    " + j.value("run_dir", "") + "\n";
  if (j.contains("waiting_for")) {
    char waited[32];
    std::snprintf(waited, sizeof waited, " (%.0f s)", j.value("waiting_s", 0.0));
    const std::string line = "waiting    " + j["waiting_for"].get<std::string>() + waited;
    out += (color ? kYellow + line + "\033[0m" : line) + "\n";
  }
  if (j.contains("last_event")) out += "last event " + j["last_event"].get<std::string>() + "\n";
  const auto& ranks = j.value("ranks", nlohmann::json::array());
  if (!ranks.empty()) {
    out += "\n";
    // The last step's wall time: compute / data-plane wait / pipeline bubble, seconds.
    Table t({"RANK", "STAGE", "REPLICA", "WORKER", "HOST", "PID", "STEP", "COMPUTE", "DATA-WAIT",
             "BUBBLE", "STATE"});
    for (const auto& r : ranks) {
      std::string state = r.value("state", "");
      if (r.value("straggler", false)) {
        char slow[48];
        std::snprintf(slow, sizeof slow, "STRAGGLER (%.1fx) ", r.value("compute_ratio", 0.0));
        state = slow + state;
      }
      const bool bad = state.rfind("exited with code 0", 0) != 0 &&
                       (state.rfind("exited", 0) == 0 || state.rfind("killed", 0) == 0);
      t.Row({std::to_string(r.value("rank", 0)), std::to_string(r.value("stage", 0)),
             std::to_string(r.value("data_index", 0)), r.value("worker", ""), r.value("host", ""),
             r.value("pid", 0) ? std::to_string(r.value("pid", 0)) : "-",
             std::to_string(r.value("step", 0)), Num(r, "compute_s", 3), Num(r, "data_wait_s", 3),
             Num(r, "bubble_s", 3), state},
            bad                           ? kRed
            : r.value("straggler", false) ? kYellow
                                          : nullptr);
    }
    out += t.Render(color);
  }
  return out;
}

std::string FormatEvents(const nlohmann::json& events) {
  Table t({"TIME", "GEN", "FROM", "TO", "RANK", "HOST", "CAUSE"});
  for (const auto& e : events) {
    const int rank = e.value("rank", -1);
    const std::string host = e.value("host", "");
    t.Row({WallTime(e.value("time_ms", int64_t(0))), std::to_string(e.value("generation", 0)),
           e.value("from", ""), e.value("to", ""), rank >= 0 ? std::to_string(rank) : "-",
           host.empty() ? "-" : host, e.value("cause", "")});
  }
  return t.Render();
}

}  // namespace moerun::cli
