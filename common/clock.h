// Clock: time as the control plane sees it, injected so failure detectors and state machines
// are tested by stepping a FakeClock, never by sleeping (docs/architecture.md §10).
// Milliseconds (and nanoseconds, for short waits) on a monotonic timeline; thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace moerun {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;  // monotonic; never goes back
  // The same timeline in nanoseconds, for durations far below a millisecond.
  virtual int64_t NowNs() const { return NowMs() * 1'000'000; }
};

class SystemClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t NowNs() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // One for the whole process, for callers that take a clock and were given none.
  static const SystemClock* Default() {
    static const SystemClock clock;
    return &clock;
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
