// ServiceNotifier: a daemon's side of systemd's service protocol (sd_notify(3), from
// libsystemd), for units with Type=notify and WatchdogSec= (scripts/systemd/). Ready() once
// the service answers; Tick() from its main loop sends WATCHDOG=1 every half watchdog period,
// so a process that stops running its loop (frozen, deadlocked) is restarted by systemd;
// Stopping() on the way out. Outside systemd ($NOTIFY_SOCKET unset) every call does nothing.
// Not thread-safe: the owner's loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace moerun {

class ServiceNotifier {
 public:
  ServiceNotifier();
  void Ready(const std::string& status);
  void Tick();
  void Stopping();
  // The watchdog period systemd asked for (0: none).
  int64_t watchdog_us() const { return watchdog_us_; }

 private:
  int64_t watchdog_us_ = 0;
  std::chrono::steady_clock::time_point next_ping_;
};

}  // namespace moerun
