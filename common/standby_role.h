// StandbyRole: what turns a warm standby trainer into a trainer (docs/fault-tolerance.md,
// "Restarts"). A worker daemon keeps `moerun standby` processes started ahead of need: exec'd,
// libraries loaded and initialized, blocked reading their stdin. When a rank starts on that
// host, the daemon writes the rank's role to one of them: the command line it would have
// exec'd and the log file for its stdout and stderr. The standby points its output at the
// log, retitles its command line to the role's (so `ps`, /proc/<pid>/cmdline and tools that
// find trainers by their flags see a trainer) and runs it in the same process; a restart
// saves the exec and the libraries' start, on every rank at once.
//
// Wire format (a pipe or socket, one role per process, then the writer closes):
//   "moerun-standby-role <version> <count>\n", then <count> fields, each "<bytes>:<bytes of
//   data>": the log path first, then argv[0], argv[1], ...
// Version 1. A reader refuses another version, a malformed message, and one over
// kMaxStandbyRoleBytes, with a message that says which.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace moerun {

inline constexpr int kStandbyRoleVersion = 1;

struct StandbyRole {
  std::string log_path;           // stdout and stderr go here, appended
  std::vector<std::string> argv;  // argv[0] included
};

std::string EncodeStandbyRole(const StandbyRole& role);
Result<StandbyRole> DecodeStandbyRole(const std::string& bytes);
// Blocks until the whole role arrived on `fd` or the writer closed it. NotFound when it closed
// before a byte (the daemon no longer wants this standby: exit quietly).
Result<StandbyRole> ReadStandbyRole(int fd);

// Overwrites this process's command line (argv as main got it: argc strings laid out one after
// another) with `title`'s strings, cut to the room the original holds and padded with NULs.
void RetitleProcess(int argc, char** argv, const std::vector<std::string>& title);

// The moment a standby took its role (CLOCK_BOOTTIME, ns): a trainer's start is counted from
// here, not from its exec. 0 for a process that was never a standby.
void MarkStandbyActivated();
int64_t StandbyActivatedBootNs();

}  // namespace moerun
