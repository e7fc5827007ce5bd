// HeartbeatTracker: declares a member dead when it has been silent for longer than the
// timeout (docs/architecture.md §6), in the style of Ray's GCS: a small class fed a clock and a
// callback. Beat() records a heartbeat; Check() (called periodically by the owner) fires
// on_dead once for every member silent for more than timeout_ms, then forgets it. A member
// that beats again after being declared dead is new again. The progress watchdog is the
// same mechanism: member = job, beat = a finished step, timeout = progress_timeout_ms.
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"

namespace moerun {

class HeartbeatTracker {
 public:
  using DeadCallback = std::function<void(const std::string& member, int64_t silent_ms)>;

  HeartbeatTracker(const Clock* clock, int64_t timeout_ms, DeadCallback on_dead);

  void Beat(const std::string& member);
  void Forget(const std::string& member);  // left on purpose: never declared dead
  // Fires on_dead for members silent longer than the timeout; returns how many.
  int Check();
  // Milliseconds since the member's last heartbeat, or -1 when it is not tracked.
  int64_t AgeMs(const std::string& member) const;
  std::vector<std::string> Members() const;

 private:
  const Clock* clock_;
  int64_t timeout_ms_;
  DeadCallback on_dead_;
  mutable std::mutex mu_;
  std::map<std::string, int64_t> last_beat_ms_;
};

}  // namespace moerun
