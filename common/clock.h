// Clock: time as the control plane sees it, injected so failure detectors and state machines
// are tested by stepping a FakeClock, never by sleeping (docs/architecture.md §10).
// Milliseconds on a monotonic timeline; thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace moerun {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;  // monotonic; never goes back
};

class SystemClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// Milliseconds since the Unix epoch: for times that outlive the process (job events, restart
// deadlines the coordinator reloads after a restart). It follows the system's wall clock, so
// an operator's clock step moves it; nothing that needs monotonic time may use it.
class WallClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 0) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(); }
  void AdvanceMs(int64_t ms) { now_.fetch_add(ms); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace moerun
