// StartupAccount: how long each phase of a rank's start took, logged once with its first step:
// what a restart costs, and where (docs/fault-tolerance.md, "Restarts"). Not thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace moerun::trainer {

class StartupAccount {
 public:
  // The first phase is the process's own start (exec, libraries, spec checks), from its start
  // time in /proc (10 ms ticks): "process"; for a warm standby (common/standby_role.h), from
  // the moment it took its role: "warm process".
  StartupAccount();
  // Ends the current phase under `name` (a literal: kept as a pointer).
  void Mark(const char* name);
  // "started in 475 ms (process 117, log 4, ..., first step 210 ms)".
  std::string Describe() const;

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::vector<std::pair<const char*, double>> phases_;
};

}  // namespace moerun::trainer
