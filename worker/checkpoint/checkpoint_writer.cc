#include "worker/checkpoint/checkpoint_writer.h"

#include <chrono>

namespace moerun::checkpoint {

CheckpointWriter::CheckpointWriter(ShardStore* store, int64_t keep, bool async,
                                   std::function<void(const WriteReport&)> on_done)
    : store_(store), keep_(keep), async_(async), on_done_(std::move(on_done)) {
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

void CheckpointWriter::Wait() {
  if (!async_) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !pending_ && !busy_; });
}

void CheckpointWriter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || pending_.has_value(); });
    if (!pending_) return;  // stop requested and nothing left
    auto job = std::move(*pending_);
    pending_.reset();
    busy_ = true;
    lock.unlock();
    Write(job.first, job.second);
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void CheckpointWriter::Write(int64_t step, const std::vector<Entry>& entries) {
  const auto start = std::chrono::steady_clock::now();
  WriteReport report;
  report.step = step;
  auto written = store_->WriteStep(step, entries);
  report.status = written.status();
  if (written.ok()) {
    report.bytes = written.value();
    auto steps = store_->CompleteSteps();
    if (steps.ok()) {
      const auto& all = steps.value();
      for (size_t i = 0; i + static_cast<size_t>(keep_) < all.size(); ++i) {
        Status s = store_->DeleteStep(all[i]);
        if (!s.ok()) report.status = s;
      }
    } else {
      report.status = steps.status();
    }
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (on_done_) on_done_(report);
}

}  // namespace moerun::checkpoint
