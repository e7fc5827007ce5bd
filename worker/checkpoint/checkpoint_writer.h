// CheckpointWriter: writes snapshots to a ShardStore on a background thread, so the training
// loop pays only for copying its state into a snapshot (docs/architecture.md §7). At most one
// snapshot is in flight: Submit() waits for the previous write, which bounds host memory to one
// copy. Retention (after each write, and on the writer's thread when SetCommitted says more)
// deletes old complete steps, as Retention says. Thread-safe for one submitting thread
// (SetCommitted from any thread); the callback runs on the writer thread.
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
  Status status;  // the step's write: OK means it is durable
  int64_t bytes = 0;
  double seconds = 0;
  // Deleting old steps failed (since the last report): worth a warning, but the step written
  // is durable all the same.
  Status retention;
};

// Which complete steps of its shard a writer deletes.
enum class Retention {
  // All but the newest `keep`: a run no coordinator commits (`moerun train`, where every shard
  // is written by ranks in lockstep and a resume takes the newest step all shards hold).
  kNewest,
  // Only what the coordinator let go (docs/architecture.md §7.1): a step older than the newest
  // committed one and not among the committed steps the job keeps. Nothing until it says. A
  // shard's own view cannot decide: it may have written steps that never commit (a peer cut
  // off before its report), and counting those would delete the committed ones a restart needs.
  kCommitted,
};

class CheckpointWriter {
 public:
  // async = false writes inside Submit() (same reports, no thread).
  CheckpointWriter(ShardStore* store, int64_t keep, bool async, Retention retention,
                   std::function<void(const WriteReport&)> on_done);
  ~CheckpointWriter();  // finishes the write in flight

  void Submit(int64_t step, std::vector<Entry> entries);
  // kCommitted: the committed steps the job keeps (ascending; CheckpointCommitted). Retention
  // runs on the writer's thread (inline when not async); a failure goes into the next write's
  // report (WriteReport::retention).
  void SetCommitted(std::vector<int64_t> steps);
  void Wait();  // until nothing is in flight, retention included

 private:
  void Write(int64_t step, const std::vector<Entry>& entries);
  Status Retain();  // the writer's thread (or the caller's, when not async)
  void Loop();

  ShardStore* store_;
  int64_t keep_;
  bool async_;
  Retention retention_;
  std::function<void(const WriteReport&)> on_done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::pair<int64_t, std::vector<Entry>>> pending_;
  std::vector<int64_t> committed_;  // kCommitted: the coordinator's list (guarded by mu_)
  bool retain_ = false;             // a retention pass is due (guarded by mu_)
  Status retain_failure_;           // the last retention-only pass's failure (writer's thread)
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace moerun::checkpoint
