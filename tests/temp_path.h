// A fresh path under /tmp for one test: unique per test process and name, removed first if a
// previous run left it behind, optionally created as a directory.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace moerun::testing {

inline std::string FreshTempPath(const std::string& suite, const std::string& name,
                                 bool create_dir) {
  const std::string p = "/tmp/moerun_" + suite + "_" + std::to_string(getpid()) + "_" + name;
  std::filesystem::remove_all(p);
  if (create_dir) std::filesystem::create_directories(p);
  return p;
}

}  // namespace moerun::testing
