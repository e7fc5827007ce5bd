#include "common/service_notifier.h"

#include <systemd/sd-daemon.h>

namespace moerun {

ServiceNotifier::ServiceNotifier() {
  uint64_t usec = 0;
  // > 0 only under a unit with WatchdogSec= (and only in the process it names).
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_us_ = int64_t(usec);
  next_ping_ = std::chrono::steady_clock::now();
}

void ServiceNotifier::Ready(const std::string& status) {
  (void)sd_notify(0, ("READY=1\nSTATUS=" + status).c_str());
}

void ServiceNotifier::Tick() {
  if (watchdog_us_ <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_ping_) return;
  (void)sd_notify(0, "WATCHDOG=1");
  next_ping_ = now + std::chrono::microseconds(watchdog_us_ / 2);
}

void ServiceNotifier::Stopping() { (void)sd_notify(0, "STOPPING=1"); }

}  // namespace moerun
