// Running the real `moerun` binary from tests: blocking runs with captured output, and
// background runs that a test can kill.
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/process_tree.h"

namespace moerun::testing {

struct Output {
  int exit_code = -1;
  std::string out, err;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `MOERUN_BIN args` through the shell and waits.
inline Output RunMoerun(const std::string& args) {
  const std::string err_path = "/tmp/moerun_test_" + std::to_string(getpid()) + ".err";
  const std::string cmd = std::string(MOERUN_BIN) + " " + args + " 2>" + err_path;
  Output r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = ReadAll(err_path);
  std::remove(err_path.c_str());
  return r;
}

// Runs `cmd` through the shell; returns its standard output.
inline std::string ShellOutput(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

// Starts `MOERUN_BIN args...` in the background with output discarded; returns its pid.
inline pid_t SpawnMoerun(const std::vector<std::string>& args) {
  std::fflush(stdout);  // or the child would flush the parent's buffered output again
  std::fflush(stderr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(MOERUN_BIN));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(MOERUN_BIN, argv.data());
    _exit(127);
  }
  return pid;
}

// The directory of the moerun binaries (moerun, moerun-coordinator, moerun-worker).
inline std::string BinDir() { return std::filesystem::path(MOERUN_BIN).parent_path().string(); }

// Starts `program args...` (a path, or a name looked up in PATH) with stdout and stderr
// appended to `log`; returns its pid.
inline pid_t SpawnLogged(const std::string& program, const std::vector<std::string>& args,
                         const std::string& log) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    FILE* out = std::fopen(log.c_str(), "a");
    if (out) {
      dup2(fileno(out), STDOUT_FILENO);
      dup2(fileno(out), STDERR_FILENO);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(program.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

inline bool Alive(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

// `sig`, then SIGKILL if the process is still there 10 s later; reaps it.
inline void Terminate(pid_t pid, int sig = SIGTERM) {
  if (pid <= 0) return;
  kill(pid, sig);
  int status;
  for (int i = 0; i < 1000 && waitpid(pid, &status, WNOHANG) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

// Polls `pred` until it holds or `seconds` pass; returns its last value.
inline bool WaitFor(const std::function<bool()>& pred, double seconds) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return pred();
}

// The worker daemon `moerun local` (pid `local`) started as `id` ("local-1"); 0 if none.
inline pid_t LocalDaemon(pid_t local, const std::string& id) {
  for (pid_t p : ChildrenRunning(local, "moerun-worker"))
    if (HasFlag(p, "--id", id)) return p;
  return 0;
}

}  // namespace moerun::testing
