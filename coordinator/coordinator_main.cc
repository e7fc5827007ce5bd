// moerun-coordinator: owns jobs, placement, membership, checkpoint commits (DESIGN.md §1).
// This build parses the coordinator's command line and stops there: the control plane is not
// implemented yet.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/exit_codes.h"

int main(int argc, char** argv) {
  CLI::App app{"moerun-coordinator: owns jobs, placement, heartbeats and checkpoint commits"};
  std::string bind = "tcp://127.0.0.1:7100", state_dir;
  app.add_option("--bind", bind, "ZeroMQ control-plane address to listen on")
      ->capture_default_str();
  app.add_option("--state-dir", state_dir, "directory for the RocksDB state and CURVE keys")
      ->required();
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr,
               "moerun-coordinator: the coordinator is not implemented in this build yet; use "
               "`moerun validate` and `moerun plan`\n");
  return moerun::kExitUnsupported;
}
