#include "coordinator/cli/status_format.h"

#include <algorithm>
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
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Row(std::vector<std::string> r) { rows_.push_back(std::move(r)); }
  std::string Render() const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_)
      for (size_t c = 0; c < r.size() && c < width.size(); ++c)
        width[c] = std::max(width[c], r[c].size());
    std::string out;
    for (const auto& r : rows_) {
      std::string line;
      for (size_t c = 0; c < r.size(); ++c) {
        line += r[c];
        if (c + 1 < r.size()) line += std::string(width[c] - r[c].size() + 2, ' ');
      }
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
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

}  // namespace

std::string FormatProgress(const nlohmann::json& j) {
  std::string out = "step " + std::to_string(j.value("step", int64_t(0))) + "/" +
                    std::to_string(j.value("total_steps", int64_t(0)));
  if (j.contains("loss")) out += "  loss " + Num(j, "loss", 4);
  if (j.contains("tokens_per_s")) out += "  " + Num(j, "tokens_per_s", 0) + " tok/s";
  if (j.contains("eta_s")) out += "  ETA " + DurationText(j["eta_s"].get<double>());
  return out;
}

std::string FormatStatus(const nlohmann::json& status, int64_t now_ms) {
  std::string out;
  const auto& jobs = status.at("jobs");
  if (jobs.empty()) {
    out += "no jobs\n";
  } else {
    Table t({"JOB", "STATE", "GEN", "STEP", "LOSS", "TOK/S", "ETA", "RESTARTS", "AGE", "WORKERS"});
    for (const auto& j : jobs) {
      std::string workers;
      for (const auto& w : j.value("workers", nlohmann::json::array()))
        workers += (workers.empty() ? "" : ",") + w.get<std::string>();
      t.Row({j.value("job_id", ""), j.value("phase", ""), std::to_string(j.value("generation", 0)),
             std::to_string(j.value("step", 0)) + "/" + std::to_string(j.value("total_steps", 0)),
             Num(j, "loss", 4), Num(j, "tokens_per_s", 0),
             j.contains("eta_s") ? DurationText(j["eta_s"].get<double>()) : "-",
             std::to_string(j.value("restarts", 0)),
             DurationText(double(now_ms - j.value("submitted_ms", now_ms)) / 1000.0),
             workers.empty() ? "-" : workers});
    }
    out += t.Render();
  }
  out += "\n";
  const auto& workers = status.at("workers");
  if (workers.empty()) {
    out += "no workers\n";
  } else {
    Table t({"WORKER", "HOST", "BACKEND", "SLOTS", "STATE", "HEARTBEAT"});
    for (const auto& w : workers) {
      const int64_t age = w.value("heartbeat_age_ms", int64_t(-1));
      t.Row({w.value("worker", ""), w.value("host", ""), w.value("backend", ""),
             std::to_string(w.value("used", 0)) + "/" + std::to_string(w.value("devices", 0)),
             w.value("alive", false) ? "alive" : "DEAD",
             age >= 0 ? Fixed(double(age) / 1000.0, 1) + "s ago" : "-"});
    }
    out += t.Render();
  }
  return out;
}

std::string FormatJob(const nlohmann::json& j, int64_t now_ms) {
  std::string out = "job        " + j.value("job_id", "") + "\n" + "state      " +
                    j.value("phase", "") + " (generation " +
                    std::to_string(j.value("generation", 0)) + ", " +
                    std::to_string(j.value("restarts", 0)) + " restarts, " +
                    std::to_string(j.value("lost_steps", 0)) + " steps redone)\n" + "checkpoint " +
                    (j.value("committed_step", 0) > 0
                         ? "step " + std::to_string(j.value("committed_step", 0)) + " committed"
                         : std::string("none committed yet")) +
                    "\n" + "progress   " + FormatProgress(j) + "\n";
  if (j.contains("val_loss")) out += "held-out   " + Num(j, "val_loss", 4) + "\n";
  out += "submitted  " + WallTime(j.value("submitted_ms", now_ms)) + "\n";
  out += "run dir    " + j.value("run_dir", "") + "\n";
  if (j.contains("last_event")) out += "last event " + j["last_event"].get<std::string>() + "\n";
  const auto& ranks = j.value("ranks", nlohmann::json::array());
  if (!ranks.empty()) {
    out += "\n";
    Table t({"RANK", "STAGE", "REPLICA", "WORKER", "HOST", "PID", "STEP", "STATE"});
    for (const auto& r : ranks) {
      t.Row({std::to_string(r.value("rank", 0)), std::to_string(r.value("stage", 0)),
             std::to_string(r.value("data_index", 0)), r.value("worker", ""), r.value("host", ""),
             r.value("pid", 0) ? std::to_string(r.value("pid", 0)) : "-",
             std::to_string(r.value("step", 0)), r.value("state", "")});
    }
    out += t.Render();
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
