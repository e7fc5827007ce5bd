#include "worker/trainer/startup_account.h"

#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>

#include "common/standby_role.h"

namespace moerun::trainer {

StartupAccount::StartupAccount() {
  timespec now{};
  clock_gettime(CLOCK_BOOTTIME, &now);
  const double now_ms = double(now.tv_sec) * 1e3 + double(now.tv_nsec) * 1e-6;
  if (const int64_t activated = StandbyActivatedBootNs(); activated > 0) {
    phases_.emplace_back("warm process", now_ms - double(activated) * 1e-6);
    return;
  }
  std::ifstream in("/proc/self/stat");
  std::string stat;
  std::getline(in, stat);
  const size_t paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return;
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i != 22) continue;  // starttime, clock ticks after boot
    const double started_ms = std::stod(field) * 1e3 / double(sysconf(_SC_CLK_TCK));
    if (now_ms >= started_ms) phases_.emplace_back("process", now_ms - started_ms);
  }
}

void StartupAccount::Mark(const char* name) {
  const auto now = std::chrono::steady_clock::now();
  phases_.emplace_back(name, std::chrono::duration<double, std::milli>(now - last_).count());
  last_ = now;
}

std::string StartupAccount::Describe() const {
  double total = 0;
  std::string parts;
  for (const auto& [name, ms] : phases_) {
    total += ms;
    parts += (parts.empty() ? "" : ", ") + std::string(name) + " " + std::to_string(int64_t(ms));
  }
  return "started in " + std::to_string(int64_t(total)) + " ms (" + parts + " ms)";
}

}  // namespace moerun::trainer
