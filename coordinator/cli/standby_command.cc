#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/exit_codes.h"
#include "common/standby_role.h"
#include "coordinator/cli/commands.h"

namespace moerun::cli {

int TakeStandbyRole(int argc, char** argv, std::vector<std::string>* role_argv) {
  auto role = ReadStandbyRole(STDIN_FILENO);
  if (!role.ok()) {
    if (role.status().code() == Status::Code::kNotFound) return kExitOk;
    // Retryable: the restart may start cold, or with a standby of the daemon's own version.
    std::fprintf(stderr, "moerun standby: %s\n", role.status().ToString().c_str());
    return kExitFailure;
  }
  MarkStandbyActivated();
  const int log = open(role->log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    std::fprintf(stderr, "moerun standby: log %s: %s\n", role->log_path.c_str(),
                 std::strerror(errno));
    return kExitBadData;
  }
  dup2(log, STDOUT_FILENO);
  dup2(log, STDERR_FILENO);
  close(log);
  const int null = open("/dev/null", O_RDONLY | O_CLOEXEC);  // the daemon's end goes
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    close(null);
  }
  RetitleProcess(argc, argv, role->argv);
  *role_argv = std::move(role->argv);
  return -1;
}

}  // namespace moerun::cli
