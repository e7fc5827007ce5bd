// Spawn: how every moerun parent starts a child process — the worker daemon its trainers,
// `moerun local` its coordinator and daemons, `moerun launch` its ranks:
//  - a checked fork: Unavailable with the system's reason when it fails;
//  - its own process group, set from both sides so there is no window: kill(-pid, sig)
//    reaches the child and everything it starts, and a terminal's Ctrl-C reaches only the
//    parent, which stops its children in order;
//  - a parent-death signal: the child gets `parent_death_signal` when the parent thread that
//    spawned it exits (SIGKILL included), and exits 127 at once when the parent died before
//    that took effect; a child never outlives the process that supervises it;
//  - stdout and stderr appended to files opened close-on-exec, so no descriptor of the
//    parent's leaks into the child but the two it asked for;
//  - execv of `program`; a failed exec exits 127.
// Thread-safe (fork copies only the calling thread; the child runs no allocation before exec
// but the argv built beforehand).
#pragma once

#include <sys/types.h>

#include <csignal>
#include <string>
#include <vector>

#include "common/status.h"

namespace moerun {

struct SpawnOptions {
  std::string program;            // the executable's path
  std::vector<std::string> argv;  // argv[0] included
  // Where the child's stdout and stderr go: appended to this file (created 0644), or the
  // parent's own when empty. "/dev/null" discards.
  std::string stdout_path, stderr_path;
  int parent_death_signal = SIGKILL;  // 0: none
};

// The child's pid.
Result<pid_t> Spawn(const SpawnOptions& options);

}  // namespace moerun
