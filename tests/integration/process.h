// Running the real `moerun` binary from tests: blocking runs with captured output, and
// background runs that a test can kill.
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

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

}  // namespace moerun::testing
