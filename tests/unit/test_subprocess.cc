// Spawn (common/subprocess.h): the child runs in a process group of its own, dies with the
// parent that spawned it, gets only its output file (not the descriptor it was opened with),
// appends to it, and exits 127 when its program cannot run.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "common/subprocess.h"
#include "tests/temp_path.h"

namespace moerun {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int Wait(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

bool Gone(pid_t pid, std::chrono::milliseconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    if (kill(pid, 0) != 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST_CASE("spawn: own process group, output appended, exit code kept") {
  const std::string dir = testing::FreshTempPath("subprocess", "group", true);
  const std::string log = dir + "/out.log";
  std::ofstream(log) << "before\n";
  auto pid = Spawn({"/bin/sh", {"sh", "-c", "echo out; echo err >&2; exit 3"}, log, log});
  REQUIRE(pid.ok());
  CHECK(getpgid(pid.value()) == pid.value());
  CHECK(Wait(pid.value()) == 3);
  CHECK(Read(log) == "before\nout\nerr\n");
}

TEST_CASE("spawn: the output file reaches the child as stdout and stderr only") {
  const std::string dir = testing::FreshTempPath("subprocess", "fds", true);
  const std::string log = dir + "/fds.log";
  // Every descriptor of the child that points at the log: 1 and 2, not the one opened for it.
  auto pid = Spawn({"/bin/sh",
                    {"sh", "-c",
                     "for f in /proc/$$/fd/*; do [ \"$(readlink $f)\" = \"" + log +
                         "\" ] && echo ${f##*/}; done; exit 0"},
                    log,
                    log});
  REQUIRE(pid.ok());
  CHECK(Wait(pid.value()) == 0);
  CHECK(Read(log) == "1\n2\n");
}

TEST_CASE("spawn: the child gets the parent's environment with the entries given added") {
  const std::string dir = testing::FreshTempPath("subprocess", "env", true);
  const std::string log = dir + "/env.log";
  setenv("MOERUN_TEST_KEPT", "kept", 1);
  setenv("MOERUN_TEST_REPLACED", "old", 1);
  auto pid = Spawn({"/bin/sh",
                    {"sh", "-c",
                     "echo $MOERUN_TEST_KEPT $MOERUN_TEST_REPLACED $MOERUN_TEST_ADDED; "
                     "env | grep -c '^MOERUN_TEST_REPLACED='"},
                    log,
                    log,
                    SIGKILL,
                    {"MOERUN_TEST_REPLACED=new", "MOERUN_TEST_ADDED=added"}});
  REQUIRE(pid.ok());
  CHECK(Wait(pid.value()) == 0);
  CHECK(Read(log) == "kept new added\n1\n");
  unsetenv("MOERUN_TEST_KEPT");
  unsetenv("MOERUN_TEST_REPLACED");
  // A trainer's malloc asks for huge pages unless the operator set GLIBC_TUNABLES.
  unsetenv("GLIBC_TUNABLES");
  CHECK(TrainerEnvironment() == std::vector<std::string>{"GLIBC_TUNABLES=glibc.malloc.hugetlb=1"});
  setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2", 1);
  CHECK(TrainerEnvironment().empty());
  unsetenv("GLIBC_TUNABLES");
}

TEST_CASE("spawn: a program that cannot run exits 127; a missing log directory is an error") {
  auto pid = Spawn({"/nonexistent/program", {"program"}, "/dev/null", "/dev/null"});
  REQUIRE(pid.ok());
  CHECK(Wait(pid.value()) == 127);
  auto bad = Spawn({"/bin/true", {"true"}, "/nonexistent/dir/log", ""});
  CHECK(bad.status().code() == Status::Code::kIOError);
  CHECK(bad.status().message().find("/nonexistent/dir/log") != std::string::npos);
  CHECK(Spawn({"", {}, "", ""}).status().code() == Status::Code::kInvalidArgument);
}

TEST_CASE("spawn: the child dies with the process that spawned it") {
  const std::string dir = testing::FreshTempPath("subprocess", "death", true);
  const std::string pid_file = dir + "/child.pid";
  // An intermediate parent spawns a long sleep, records its pid, then is killed for real.
  const pid_t parent = fork();
  REQUIRE(parent >= 0);
  if (parent == 0) {
    auto child = Spawn({"/bin/sleep", {"sleep", "30"}, "/dev/null", "/dev/null"});
    std::ofstream(pid_file) << (child.ok() ? child.value() : -1) << "\n";
    pause();
    _exit(0);
  }
  pid_t child = 0;
  for (int i = 0; i < 250 && child <= 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream(pid_file) >> child;
  }
  REQUIRE(child > 0);
  CHECK(kill(child, 0) == 0);
  kill(parent, SIGKILL);
  CHECK(Wait(parent) == -SIGKILL);
  CHECK(Gone(child, std::chrono::seconds(5)));
}

}  // namespace
}  // namespace moerun
