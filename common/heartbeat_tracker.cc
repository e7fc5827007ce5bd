#include "common/heartbeat_tracker.h"

namespace moerun {

HeartbeatTracker::HeartbeatTracker(const Clock* clock, int64_t timeout_ms, DeadCallback on_dead)
    : clock_(clock), timeout_ms_(timeout_ms), on_dead_(std::move(on_dead)) {}

void HeartbeatTracker::Beat(const std::string& member) {
  std::lock_guard<std::mutex> lock(mu_);
  last_beat_ms_[member] = clock_->NowMs();
}

void HeartbeatTracker::Forget(const std::string& member) {
  std::lock_guard<std::mutex> lock(mu_);
  last_beat_ms_.erase(member);
}

int HeartbeatTracker::Check() {
  std::vector<std::pair<std::string, int64_t>> dead;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = clock_->NowMs();
    for (auto it = last_beat_ms_.begin(); it != last_beat_ms_.end();) {
      const int64_t silent = now - it->second;
      if (silent > timeout_ms_) {
        dead.emplace_back(it->first, silent);
        it = last_beat_ms_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Outside the lock: the callback may call back into the tracker.
  for (const auto& [member, silent] : dead) on_dead_(member, silent);
  return int(dead.size());
}

int64_t HeartbeatTracker::AgeMs(const std::string& member) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = last_beat_ms_.find(member);
  return it == last_beat_ms_.end() ? -1 : clock_->NowMs() - it->second;
}

std::vector<std::string> HeartbeatTracker::Members() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [m, t] : last_beat_ms_) out.push_back(m);
  return out;
}

}  // namespace moerun
