#include "worker/trainer/train_report.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/duration_text.h"

namespace moerun::trainer {
namespace {

// Keeps the metrics of steps up to `last_step` (a resumed run rewrites what came after).
Status TruncateMetrics(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return Status::OK();
  std::string line, kept;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t(0)) <= last_step) kept += line + "\n";
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  return out.good() ? Status::OK() : Status::IOError("cannot rewrite " + path);
}

void DrawProgress(int64_t step, int64_t total, double loss, double tps, double eta_s) {
  constexpr int kWidth = 30;
  const int filled = int(double(kWidth) * double(step) / double(total));
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s   ", bar.c_str(),
               (long long)step, (long long)total, loss, tps, DurationText(eta_s).c_str());
  std::fflush(stderr);
}

}  // namespace

TrainReporter::TrainReporter(const JobSpec& spec, const TrainOptions& opts,
                             std::shared_ptr<spdlog::logger> log, bool tty)
    : spec_(spec), opts_(opts), log_(std::move(log)), lead_(opts.rank == 0), tty_(tty) {}

Status TrainReporter::Open(int64_t step, int64_t first_step) {
  first_step_ = first_step;
  start_ = std::chrono::steady_clock::now();
  if (!lead_) return Status::OK();
  const std::string path = opts_.run_dir + "/metrics.jsonl";
  if (opts_.resume) {
    MOERUN_RETURN_IF_ERROR(TruncateMetrics(path, step));
  } else {
    std::ofstream(path, std::ios::trunc);
  }
  metrics_.open(path, std::ios::app);
  return Status::OK();
}

void TrainReporter::Step(const nlohmann::json& line, int64_t total) {
  const int64_t step = line["step"];
  const double loss = line["loss"];
  if (lead_) {
    metrics_ << line.dump() << "\n";
    metrics_.flush();
  }
  if (opts_.control) {
    nlohmann::json report = line;
    report["total_steps"] = total;
    if (memory_held_.second > 0) report["memory_steps"] = {memory_held_.first, memory_held_.second};
    if (replica_held_.second > 0)
      report["replica_steps"] = {replica_held_.first, replica_held_.second};
    if (!lead_) report.erase("expert_load");  // rank 0's report is the one stored
    opts_.control->ReportStep(report);
  }
  if (tty_) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int64_t tokens =
        (step - first_step_ + 1) * spec_.train.global_batch * spec_.model.seq_len;
    DrawProgress(step, total, loss, double(tokens) / elapsed,
                 elapsed / double(step - first_step_ + 1) * double(total - step));
  }
  const std::string mtp =
      line.contains("mtp_loss") ? fmt::format(" mtp {:.4f}", double(line["mtp_loss"])) : "";
  log_->info(
      "step {}/{} loss {:.4f}{} lr {:.3e} grad_norm {:.3f} load max/mean {:.2f} {:.0f} tok/s", step,
      total, loss, mtp, double(line["lr"]), double(line["grad_norm"]),
      double(line["max_over_mean_load"]), double(line["tokens_per_s"]));
}

void TrainReporter::ShardWritten(const checkpoint::WriteReport& r, const std::string& shard) {
  if (!r.status.ok()) {
    log_->error("checkpoint step {} failed: {}", r.step, r.status.message());
    std::lock_guard<std::mutex> lock(shards_mu_);
    if (r.status.code() == Status::Code::kDataLoss && write_failure_.ok())
      write_failure_ = r.status.WithContext("checkpoint step " + std::to_string(r.step));
    return;
  }
  log_->info("checkpoint step {} written: {:.1f} MiB in {:.3f} s", r.step,
             double(r.bytes) / (1 << 20), r.seconds);
  if (!r.retention.ok()) log_->warn("deleting old checkpoint steps: {}", r.retention.message());
  if (!opts_.control) return;  // reported from the training thread (ReportShards)
  std::lock_guard<std::mutex> lock(shards_mu_);
  shards_written_.push_back({{"step", r.step}, {"shard", shard}, {"bytes", r.bytes}});
}

Status TrainReporter::ReportShards() {
  std::lock_guard<std::mutex> lock(shards_mu_);
  if (opts_.control) {
    for (const auto& j : shards_written_) opts_.control->ReportShard(j);
    shards_written_.clear();
  }
  return write_failure_;
}

bool TrainReporter::StopRequested() const {
  return opts_.control != nullptr && opts_.control->stop_requested();
}

std::optional<std::vector<int64_t>> TrainReporter::PollCommitted() {
  if (!opts_.control) return std::nullopt;
  std::lock_guard<std::mutex> lock(shards_mu_);  // the channel's last shard report changes
  return opts_.control->PollCommitted();
}

void TrainReporter::Finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace moerun::trainer
