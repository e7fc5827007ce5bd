// `moerun status --watch` in a real pseudo-terminal (a tmux pane) against a live `moerun
// local` job: the view refreshes with a moving progress bar, and a daemon frozen with SIGSTOP
// is shown LATE (yellow) and then DEAD (red), and the watch survives a coordinator killed
// and relaunched. Skipped (exit code 77) without tmux.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <regex>

#include "tests/integration/process.h"
#include "tests/temp_path.h"

using moerun::ChildrenRunning;
using moerun::testing::FreshTempPath;
using moerun::testing::ReadAll;
using moerun::testing::ShellOutput;
using moerun::testing::SpawnLogged;
using moerun::testing::Terminate;
using moerun::testing::WaitFor;
namespace fs = std::filesystem;

namespace {

// The pane as the user sees it; with_escapes keeps the colours (as tmux re-emits them).
std::string Pane(const std::string& session, bool with_escapes = false) {
  return ShellOutput("tmux capture-pane -p " + std::string(with_escapes ? "-e " : "") + "-t " +
                     session + " 2>/dev/null");
}

// The step shown in the job's row ("123/3000"), or -1.
int64_t ShownStep(const std::string& pane, const std::string& job) {
  std::smatch m;
  if (!std::regex_search(pane, m, std::regex(job + R"(\s+RUNNING.*?\]\s+\d+%\s+(\d+)/3000)")))
    return -1;
  return std::stoll(m[1]);
}

// The pane's line naming `worker`, with its escapes.
std::string LineOf(const std::string& pane, const std::string& worker) {
  const size_t at = pane.find(worker + " ");
  if (at == std::string::npos) return "";
  const size_t begin = pane.rfind('\n', at), end = pane.find('\n', at);
  return pane.substr(begin == std::string::npos ? 0 : begin + 1, end - begin);
}

}  // namespace

TEST_CASE("moerun status --watch in a terminal: live progress, unhealthy workers highlighted") {
  if (ShellOutput("command -v tmux").empty()) {
    std::fprintf(stderr, "skipped: tmux not found (apt install tmux)\n");
    std::exit(77);
  }
  const std::string dir = FreshTempPath("watch", "tmux", true);
  const std::string log = dir + "/local.log";
  // train-fast with a 10 s heartbeat timeout: LATE (past half of it) shows for 5 s, long
  // enough for a 1 s refresh on a loaded machine to catch.
  const std::string spec = dir + "/watch.yaml";
  std::ofstream(spec) << ReadAll(std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml")
                      << "fault_tolerance:\n  heartbeat_timeout_ms: 10000\n";
  const pid_t local = SpawnLogged(
      MOERUN_BIN, {"local", spec, "--run-dir", dir + "/run", "--steps", "3000", "--no-progress"},
      log);
  std::string job;
  REQUIRE(WaitFor(
      [&] {
        std::smatch m;
        const std::string out = ReadAll(log);
        if (std::regex_search(out, m, std::regex(R"(job (\S+) submitted)"))) job = m[1];
        return !job.empty();
      },
      60));
  const std::string control = dir + "/run/control";
  const std::string endpoint = ReadAll(control + "/coordinator/endpoint");
  REQUIRE(!endpoint.empty());

  const std::string session = "moerun-watch-" + std::to_string(getpid());
  const std::string watch = "MOERUN_COORDINATOR=" + endpoint.substr(0, endpoint.find('\n')) +
                            " MOERUN_KEYS=" + control + "/keys " + MOERUN_BIN + " status --watch";
  REQUIRE(ShellOutput("tmux new-session -d -s " + session + " -x 160 -y 40 '" + watch +
                      "' && echo started")
              .find("started") != std::string::npos);

  // The job's row shows a progress bar, and the step moves between refreshes.
  int64_t first = -1, later = -1;
  REQUIRE(WaitFor([&] { return (first = ShownStep(Pane(session), job)) > 0; }, 60));
  CHECK(std::regex_search(Pane(session), std::regex(R"(\[[#-]{20}\]\s+\d+%)")));
  CHECK(WaitFor([&] { return (later = ShownStep(Pane(session), job)) > first; }, 30));
  MESSAGE("watch showed step " << first << ", then " << later);

  // Freeze daemon local-1: LATE after two missed heartbeats, DEAD after the timeout.
  const pid_t frozen = moerun::testing::LocalDaemon(local, "local-1");
  REQUIRE(frozen > 0);
  kill(frozen, SIGSTOP);
  std::string line;
  CHECK(WaitFor(
      [&] {
        line = LineOf(Pane(session, true), "local-1");
        return line.find("LATE") != std::string::npos;
      },
      20));
  CHECK(line.find("33m") != std::string::npos);  // yellow
  CHECK(WaitFor(
      [&] {
        line = LineOf(Pane(session, true), "local-1");
        return line.find("DEAD") != std::string::npos;
      },
      20));
  CHECK(line.find("31m") != std::string::npos);  // red
  CHECK(Pane(session).find("unhealthy worker(s)") != std::string::npos);
  // The healthy daemon's line is plain.
  CHECK(LineOf(Pane(session, true), "local-0").find("\033[") == std::string::npos);
  kill(frozen, SIGCONT);

  // The coordinator killed for real (moerun local relaunches it): the watch keeps running and
  // draws the job again once the new coordinator answers.
  pid_t coordinator = 0;
  for (pid_t p : ChildrenRunning(local, "moerun-coordinator")) coordinator = p;
  REQUIRE(coordinator > 0);
  kill(coordinator, SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(WaitFor(
      [&] {
        const bool alive =
            ShellOutput("tmux has-session -t " + session + " 2>/dev/null && echo up").find("up") !=
            std::string::npos;
        return alive && Pane(session).find(job + " ") != std::string::npos &&
               ChildrenRunning(local, "moerun-coordinator").size() == 1 &&
               ChildrenRunning(local, "moerun-coordinator")[0] != coordinator;
      },
      40));
  CHECK(ShellOutput("tmux has-session -t " + session + " 2>/dev/null && echo up").find("up") !=
        std::string::npos);

  ShellOutput("tmux kill-session -t " + session);
  Terminate(local, SIGINT);
  fs::remove_all(dir);
}
