// CheckpointWriter: writes snapshots to a ShardStore on a background thread, so the training
// loop pays only for copying its state into a snapshot (docs/architecture.md §7). At most one
// snapshot is in flight: Submit() waits for the previous write, which bounds host memory to one
// copy. After each write, retention deletes all but the newest `keep` complete steps. Thread-safe
// for one submitting thread; the callback runs on the writer thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "worker/checkpoint/shard_store.h"

namespace moerun::checkpoint {

struct WriteReport {
  int64_t step = 0;
  Status status;
  int64_t bytes = 0;
  double seconds = 0;
};

class CheckpointWriter {
 public:
  // async = false writes inside Submit() (same reports, no thread).
  CheckpointWriter(ShardStore* store, int64_t keep, bool async,
                   std::function<void(const WriteReport&)> on_done);
  ~CheckpointWriter();  // finishes the write in flight

  void Submit(int64_t step, std::vector<Entry> entries);
  void Wait();  // until nothing is in flight

 private:
  void Write(int64_t step, const std::vector<Entry>& entries);
  void Loop();

  ShardStore* store_;
  int64_t keep_;
  bool async_;
  std::function<void(const WriteReport&)> on_done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::pair<int64_t, std::vector<Entry>>> pending_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace moerun::checkpoint
