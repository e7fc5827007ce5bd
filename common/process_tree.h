// Process tree lookups in /proc, for the tests and benches that fault `moerun local`'s
// coordinator, daemons and trainers: a process's children and its command line. Linux only;
// thread-safe (reads /proc, holds nothing).
#pragma once

#include <sys/types.h>

#include <algorithm>
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

// The process's arguments, argv[0] first (empty when it is gone).
inline std::vector<std::string> Arguments(pid_t pid) {
  std::vector<std::string> args;
  const std::string line = CommandLine(pid);
  for (size_t at = 0; at < line.size();) {
    const size_t end = std::min(line.find('\0', at), line.size());
    args.push_back(line.substr(at, end - at));
    at = end + 1;
  }
  // A warm standby that became a trainer pads its retitled command line with NULs
  // (common/standby_role.h).
  while (!args.empty() && args.back().empty()) args.pop_back();
  return args;
}

// True when `pid` was started with `flag value` among its arguments ("--id", "local-1"). Whole
// arguments only: a substring test would also match a path that happens to contain the value.
inline bool HasFlag(pid_t pid, const std::string& flag, const std::string& value) {
  const std::vector<std::string> args = Arguments(pid);
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag && args[i + 1] == value) return true;
  return false;
}

// Children of `parent` whose program (argv[0], without its directory) is `program`.
inline std::vector<pid_t> ChildrenRunning(pid_t parent, const std::string& program) {
  std::vector<pid_t> out;
  for (pid_t c : Children(parent)) {
    const std::vector<std::string> args = Arguments(c);
    if (args.empty()) continue;
    const std::string& argv0 = args[0];
    if (argv0.substr(argv0.find_last_of('/') + 1) == program) out.push_back(c);
  }
  return out;
}

// A worker daemon's trainers: its children running `moerun train`, a warm standby that took a
// role included, a standby still waiting for one (`moerun standby`) not.
inline std::vector<pid_t> TrainersOf(pid_t daemon) {
  std::vector<pid_t> out;
  for (pid_t c : Children(daemon)) {
    const std::vector<std::string> args = Arguments(c);
    if (args.size() > 1 && args[1] == "train") out.push_back(c);
  }
  return out;
}

}  // namespace moerun
