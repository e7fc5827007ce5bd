// Spawn: how every moerun parent starts a child process — the worker daemon its trainers,
// `moerun local` its coordinator and daemons, `moerun launch` its ranks:
//  - a checked fork: Unavailable with the system's reason when it fails;
//  - its own process group, set from both sides so there is no window: kill(-pid, sig)
//    reaches the child and everything it starts, and a terminal's Ctrl-C reaches only the
//    parent, which stops its children in order;
//  - signals blocked from fork until the child has reset the parent's handlers to the default,
//    so a signal sent at once (a fence) ends the child rather than running a parent's handler;
//  - a parent-death signal: the child gets `parent_death_signal` when the parent thread that
//    spawned it exits (SIGKILL included), and exits 127 at once when the parent died before
//    that took effect; a child never outlives the process that supervises it;
//  - stdout and stderr appended to files opened close-on-exec, so no descriptor of the
//    parent's leaks into the child but the ones it asked for (stdin too, when given);
//  - execve of `program` with the parent's environment plus `environment`; a failed exec exits
//    127.
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
  // "NAME=value" entries added to the parent's environment; one that names a variable the
  // parent has replaces it.
  std::vector<std::string> environment{};
  // The child's stdin: this descriptor (opened close-on-exec, so only the copy on 0 survives),
  // or the parent's own when -1.
  int stdin_fd = -1;
};

// The child's pid.
Result<pid_t> Spawn(const SpawnOptions& options);

// Runs `command` through /bin/sh and waits: its output, stderr merged, trailing newlines and
// spaces trimmed; Unavailable naming the command and what it printed when it fails. For short
// administrative commands (`scontrol`), never on a hot path.
Result<std::string> CommandOutput(const std::string& command);

// What a trainer's environment adds: glibc's malloc asks for transparent huge pages for its
// large blocks (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), which halves what a fresh trainer
// spends on page faults before its first step (docs/fault-tolerance.md, "Restarts"). Nothing
// when the parent's environment already sets GLIBC_TUNABLES: the operator's choice stands.
std::vector<std::string> TrainerEnvironment();

}  // namespace moerun
