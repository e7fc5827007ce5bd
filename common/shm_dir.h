// ShmDirFor: a directory on tmpfs (/dev/shm) named after a path, for memory that outlives a
// process: the same path always names the same directory (a relaunched daemon finds its
// predecessor's memory snapshots), two paths practically never share one. Pure; thread-safe.
#pragma once

#include <cstdio>
#include <functional>
#include <string>

namespace moerun {

// "/dev/shm/moerun-<tag><16 hex digits of a hash of path>".
inline std::string ShmDirFor(const std::string& tag, const std::string& path) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(path));
  return "/dev/shm/moerun-" + tag + hash;
}

}  // namespace moerun
