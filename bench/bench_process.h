// Processes for the benches that run `moerun local` and fault it (recovery, goodput): starting
// it with its output in a file (its coordinator, daemons and trainers are found with
// common/process_tree.h).
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "common/process_tree.h"

namespace moerun::bench {

// A copy of `job` at `path` with the value of each indented `key: value` line named in `set`
// replaced (the first such line per key); false when a key has no line to replace.
inline bool WriteJobWith(const std::string& job, const std::map<std::string, std::string>& set,
                         const std::string& path) {
  std::ifstream in(job);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  for (const auto& [key, value] : set) {
    const std::regex line("^( +" + key + "): *[^ #\n]+", std::regex::multiline);
    if (!std::regex_search(text, line)) return false;
    text = std::regex_replace(text, line, "$1: " + value, std::regex_constants::format_first_only);
  }
  std::ofstream(path) << text;
  return bool(std::ifstream(path));
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
