#include "worker/checkpoint/checkpoint_writer.h"

#include <algorithm>
#include <chrono>

namespace moerun::checkpoint {

CheckpointWriter::CheckpointWriter(ShardStore* store, int64_t keep, bool async, Retention retention,
                                   std::function<void(const WriteReport&)> on_done)
    : store_(store),
      keep_(keep),
      async_(async),
      retention_(retention),
      on_done_(std::move(on_done)) {
  if (async_) thread_ = std::thread([this] { Loop(); });
}

CheckpointWriter::~CheckpointWriter() {
  if (!async_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CheckpointWriter::Submit(int64_t step, std::vector<Entry> entries) {
  if (!async_) {
    Write(step, entries);
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !pending_ && !busy_; });
  pending_.emplace(step, std::move(entries));
  cv_.notify_all();
}

void CheckpointWriter::SetCommitted(std::vector<int64_t> steps) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (steps == committed_) return;
    committed_ = std::move(steps);
    retain_ = async_;  // the writer's thread runs it
  }
  if (async_) {
    cv_.notify_all();
  } else {
    retain_failure_ = Retain();
  }
}

void CheckpointWriter::Wait() {
  if (!async_) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !pending_ && !busy_ && !retain_; });
}

void CheckpointWriter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || pending_.has_value() || retain_; });
    if (!pending_ && !retain_) return;  // stop requested and nothing left
    auto job = std::move(pending_);
    pending_.reset();
    retain_ = false;  // a write retains too
    busy_ = true;
    lock.unlock();
    if (job) {
      Write(job->first, job->second);
    } else {
      retain_failure_ = Retain();
    }
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

Status CheckpointWriter::Retain() {
  auto steps = store_->CompleteSteps();
  if (!steps.ok()) return steps.status();
  const std::vector<int64_t>& all = steps.value();
  std::vector<int64_t> doomed;
  if (retention_ == Retention::kNewest) {
    for (size_t i = 0; i + static_cast<size_t>(keep_) < all.size(); ++i) doomed.push_back(all[i]);
  } else {
    std::vector<int64_t> kept;
    {
      std::lock_guard<std::mutex> lock(mu_);
      kept = committed_;
    }
    if (kept.empty()) return Status::OK();  // the coordinator has not said: nothing goes
    for (int64_t s : all)
      if (s < kept.back() && !std::binary_search(kept.begin(), kept.end(), s)) doomed.push_back(s);
  }
  Status result;
  for (int64_t s : doomed) {
    Status d = store_->DeleteStep(s);
    if (!d.ok() && result.ok()) result = d;
  }
  return result;
}

void CheckpointWriter::Write(int64_t step, const std::vector<Entry>& entries) {
  const auto start = std::chrono::steady_clock::now();
  WriteReport report;
  report.step = step;
  auto written = store_->WriteStep(step, entries);
  report.status = written.status();
  if (written.ok()) {
    report.bytes = written.value();
    report.retention = Retain();
    if (report.retention.ok()) report.retention = retain_failure_;
    retain_failure_ = Status::OK();
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (on_done_) on_done_(report);
}

}  // namespace moerun::checkpoint
