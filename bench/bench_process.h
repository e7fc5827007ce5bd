// Processes for the benches that run `moerun local` and fault it (recovery, goodput): starting
// it with its output in a file, and finding its coordinator, daemons and trainers in /proc.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace moerun::bench {

inline std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

// Whether the process's command line mentions `program`.
inline bool Runs(pid_t pid, const std::string& program) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  return s.find(program) != std::string::npos;
}

// The `moerun` binary next to this one.
inline std::string MoerunBinary() {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "moerun").string();
}

// `moerun local JOB --run-dir RUN --steps STEPS --no-progress` in the background, its output
// in RUN.log; returns its pid.
inline pid_t SpawnLocal(const std::string& job, const std::string& run, int64_t steps) {
  const std::string moerun = MoerunBinary();
  std::fflush(stdout);
  const pid_t local = fork();
  if (local == 0) {
    FILE* out = std::fopen((run + ".log").c_str(), "w");
    if (out) {
      dup2(fileno(out), STDOUT_FILENO);
      dup2(fileno(out), STDERR_FILENO);
    }
    execl(moerun.c_str(), moerun.c_str(), "local", job.c_str(), "--run-dir", run.c_str(), "--steps",
          std::to_string(steps).c_str(), "--no-progress", nullptr);
    _exit(127);
  }
  return local;
}

}  // namespace moerun::bench
