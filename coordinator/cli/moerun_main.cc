#include <malloc.h>

#include <CLI/CLI.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"

int main(int argc, char** argv) {
  // Training allocates and frees the same large activation buffers every micro-batch; keep
  // them on the heap (up to glibc's 32 MiB limit) instead of an mmap/munmap and page faults
  // per buffer.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // A warm standby (common/standby_role.h) waits here for the command line it runs.
  std::vector<std::string> role_args;
  std::vector<char*> role_argv;
  if (argc >= 2 && std::strcmp(argv[1], "standby") == 0) {
    const int rc = moerun::cli::TakeStandbyRole(argc, argv, &role_args);
    if (rc >= 0) return rc;
    for (auto& a : role_args) role_argv.push_back(a.data());
    role_argv.push_back(nullptr);
    argc = int(role_args.size());
    argv = role_argv.data();
  }
  moerun::cli::RememberArgs(argc, argv);
  CLI::App app{"moerun: train Mixture-of-Experts models on a cluster and keep the run alive"};
  app.require_subcommand(1);
  int exit_code = moerun::kExitOk;
  moerun::cli::AddValidateCommand(app, &exit_code);
  moerun::cli::AddPlanCommand(app, &exit_code);
  moerun::cli::AddTrainCommand(app, &exit_code);
  moerun::cli::AddLaunchCommand(app, &exit_code);
  moerun::cli::AddLocalCommand(app, &exit_code);
  moerun::cli::AddSlurmCommand(app, &exit_code);
  moerun::cli::AddRemoteCommands(app, &exit_code);
  moerun::cli::AddCheckpointCommand(app, &exit_code);
  moerun::cli::AddEvalCommand(app, &exit_code);
  moerun::cli::AddExportCommand(app, &exit_code);
  moerun::cli::AddVersionCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    // Usage errors are configuration errors: the same never-retry code as a bad spec.
    return rc == 0 ? moerun::kExitOk : moerun::kExitInvalidConfig;
  }
  return exit_code;
}
