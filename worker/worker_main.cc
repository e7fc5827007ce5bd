// moerun-worker: the per-host daemon that registers with the coordinator and supervises one
// trainer process per device (DESIGN.md §1). This build parses the daemon's command line and
// stops there: supervision and the control protocol are not implemented yet.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/exit_codes.h"

int main(int argc, char** argv) {
  CLI::App app{"moerun-worker: per-host daemon that supervises one trainer per device"};
  std::string coordinator, state_dir;
  int devices = 1;
  app.add_option("--coordinator", coordinator,
                 "coordinator control address, e.g. tcp://10.0.0.1:7100")
      ->required();
  app.add_option("--state-dir", state_dir, "directory for keys, logs and trainer run dirs");
  app.add_option("--devices", devices, "devices (trainer slots) this host offers")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr,
               "moerun-worker: the worker daemon is not implemented in this build yet; use "
               "`moerun validate` and `moerun plan`\n");
  return moerun::kExitUnsupported;
}
