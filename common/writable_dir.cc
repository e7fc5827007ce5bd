#include "common/writable_dir.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace moerun {

Status CheckWritableDir(const std::string& dir, const std::string& what) {
  const std::string probe = dir + "/.moerun-write-check-" + std::to_string(getpid());
  FILE* f = std::fopen(probe.c_str(), "w");
  if (f == nullptr) {
    return Status::DataLoss(what + " " + dir + " is not writable (" + std::strerror(errno) +
                            "): fix its permissions or attributes, or choose another");
  }
  std::fclose(f);
  std::remove(probe.c_str());
  return Status::OK();
}

}  // namespace moerun
