// `moerun-worker --health-check`: the node self-test as a command (health_command.cc).
#pragma once

namespace moerun::worker {

// argv holds --health-check and its options; the process's exit code.
int RunHealthCheck(int argc, char** argv);

}  // namespace moerun::worker
