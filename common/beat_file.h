// BeatFile: a worker daemon and one of its trainers beat to each other through a small file
// both map (docs/architecture.md §6). The daemon writes its slot every loop turn, the trainer
// its own from a watch thread; each reads the other's:
//  - a trainer whose daemon stopped beating (frozen, deadlocked) fences itself: the
//    coordinator is about to count that daemon dead and restart its ranks elsewhere, and
//    nothing else would stop this one (worker/trainer/daemon_watch.h);
//  - a daemon whose trainer stopped beating (stopped, or every thread stuck) kills it
//    (worker/daemon/trainer_supervisor.h).
// Beats are CLOCK_MONOTONIC milliseconds, one timeline for every process of the host.
// Layout (version 1, 64 bytes): [0] magic "MOEBEAT1", [1] daemon beat ms, [2] trainer beat
// ms, [3] daemon pid; the rest zero. Slots are 8-byte atomics: thread- and process-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/mapped_file.h"
#include "common/status.h"

namespace moerun {

class BeatFile {
 public:
  // The daemon's side: creates (or truncates) `path` with its own beat at `now_ms`.
  static Result<std::unique_ptr<BeatFile>> Create(const std::string& path, int64_t now_ms,
                                                  int64_t daemon_pid);
  // The trainer's side: a file Create made; an error names the path and what is wrong.
  static Result<std::unique_ptr<BeatFile>> Open(const std::string& path);
  BeatFile(const BeatFile&) = delete;
  BeatFile& operator=(const BeatFile&) = delete;

  void BeatDaemon(int64_t now_ms) { slot(1).store(now_ms, std::memory_order_relaxed); }
  void BeatTrainer(int64_t now_ms) { slot(2).store(now_ms, std::memory_order_relaxed); }
  int64_t daemon_ms() const { return slot(1).load(std::memory_order_relaxed); }
  int64_t trainer_ms() const { return slot(2).load(std::memory_order_relaxed); }  // 0: none yet
  int64_t daemon_pid() const { return slot(3).load(std::memory_order_relaxed); }
  const std::string& path() const { return path_; }

  // CLOCK_MONOTONIC in milliseconds: SystemClock (common/clock.h), std::chrono::steady_clock.
  static int64_t NowMs();

 private:
  BeatFile(std::string path, MappedFile map) : path_(std::move(path)), map_(std::move(map)) {}
  std::atomic<int64_t>& slot(int i) const {
    return static_cast<std::atomic<int64_t>*>(map_.data())[i];
  }

  std::string path_;
  MappedFile map_;
};

}  // namespace moerun
