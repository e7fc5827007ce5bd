#include "coordinator/http/client_gate.h"

namespace moerun::coordinator {

ClientGate::Verdict ClientGate::Admit(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  if (total_open_ >= total_) return Verdict::kServerFull;
  int& n = open_[address];
  if (n >= per_client_) {
    if (n == 0) open_.erase(address);
    return Verdict::kClientFull;
  }
  ++n;
  ++total_open_;
  return Verdict::kAdmitted;
}

void ClientGate::Release(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(address);
  if (it == open_.end()) return;
  --total_open_;
  if (--it->second <= 0) open_.erase(it);
}

int ClientGate::open() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_open_;
}

int ClientGate::open_from(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(address);
  return it == open_.end() ? 0 : it->second;
}

}  // namespace moerun::coordinator
