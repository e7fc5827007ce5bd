// Process tree lookups in /proc, for the tests and benches that fault `moerun local`'s
// coordinator, daemons and trainers: a process's children and its command line. Linux only;
// thread-safe (reads /proc, holds nothing).
#pragma once

#include <sys/types.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace moerun {

// Child pids of `pid` (a daemon's trainers, `moerun local`'s coordinator and daemons); empty
// when it has none or is gone.
inline std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

// The process's command line, its arguments separated by NUL bytes ("" when it is gone).
inline std::string CommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Children of `parent` whose command line mentions `program`.
inline std::vector<pid_t> ChildrenRunning(pid_t parent, const std::string& program) {
  std::vector<pid_t> out;
  for (pid_t c : Children(parent))
    if (CommandLine(c).find(program) != std::string::npos) out.push_back(c);
  return out;
}

}  // namespace moerun
