// Subcommands of the `moerun` CLI. Each Add*Command registers its options on `app` and sets
// *exit_code when it runs (exit codes from common/exit_codes.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace moerun::cli {

void AddValidateCommand(CLI::App& app, int* exit_code);
void AddPlanCommand(CLI::App& app, int* exit_code);
void AddVersionCommand(CLI::App& app, int* exit_code);
void AddTrainCommand(CLI::App& app, int* exit_code);
void AddLaunchCommand(CLI::App& app, int* exit_code);
void AddCheckpointCommand(CLI::App& app, int* exit_code);
void AddEvalCommand(CLI::App& app, int* exit_code);
void AddExportCommand(CLI::App& app, int* exit_code);
// submit, status, cancel, events, logs, keygen: talking to a coordinator.
void AddRemoteCommands(CLI::App& app, int* exit_code);
void AddLocalCommand(CLI::App& app, int* exit_code);
void AddSlurmCommand(CLI::App& app, int* exit_code);

// `moerun standby`: waits on stdin for a role (common/standby_role.h), points stdout and stderr
// at its log and retitles the process. Then -1 and *role_argv holds the command line to run;
// else the exit code: 0 when the daemon closed without a role, 1 (retryable) for a role it
// cannot read, 3 for a log it cannot open.
int TakeStandbyRole(int argc, char** argv, std::vector<std::string>* role_argv);

// The process's arguments, kept by main for `moerun train` to hand a cuda job to
// moerun-train-gpu with the same arguments.
void RememberArgs(int argc, char** argv);

}  // namespace moerun::cli
