#include "coordinator/cli/supervised_child.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "common/exit_codes.h"
#include "common/subprocess.h"

namespace moerun::cli {

using SteadyClock = std::chrono::steady_clock;

void SupervisedChild::Launch() {
  auto started = Spawn({args[0], args, log, log, SIGKILL});
  launched_at = SteadyClock::now();
  if (!started.ok()) {
    std::fprintf(stderr, "moerun: cannot start %s: %s\n", args[0].c_str(),
                 started.status().message().c_str());
    pid = -1;
    return;
  }
  pid = started.value();
}

bool SupervisedChild::ReviveIfDead() {
  if (waiting_to_relaunch) {
    if (SteadyClock::now() < relaunch_at) return false;
    waiting_to_relaunch = false;
    ++relaunches;
    dead_since.reset();
    Launch();
    return true;
  }
  int status = 0;
  if (pid <= 0 || waitpid(pid, &status, WNOHANG) != pid) return false;
  if (WIFEXITED(status) && IsNonRetryableExit(WEXITSTATUS(status))) {
    std::fprintf(stderr,
                 "\nmoerun: %s (pid %d) exited with code %d, which a relaunch cannot fix; see %s\n",
                 name.c_str(), pid, WEXITSTATUS(status), log.c_str());
    fatal_exit = WEXITSTATUS(status);
    pid = -1;
    return false;
  }
  const bool quick =
      SteadyClock::now() - launched_at < std::chrono::milliseconds(kChildQuickExitMs);
  quick_exits = quick ? quick_exits + 1 : 0;
  const int64_t backoff =
      quick_exits == 0
          ? 0
          : std::min<int64_t>(kChildRelaunchBackoffMaxMs,
                              kChildRelaunchBackoffMs << std::min(quick_exits - 1, 16));
  std::fprintf(stderr, "\nmoerun: %s (pid %d) %s; relaunching it%s\n", name.c_str(), pid,
               WIFSIGNALED(status)
                   ? ("was killed by signal " + std::to_string(WTERMSIG(status))).c_str()
                   : ("exited with code " + std::to_string(WEXITSTATUS(status))).c_str(),
               backoff > 0 ? (" in " + std::to_string(backoff) + " ms (it exited within " +
                              std::to_string(kChildQuickExitMs) + " ms of its start)")
                                 .c_str()
                           : "");
  pid = -1;
  waiting_to_relaunch = true;
  relaunch_at = SteadyClock::now() + std::chrono::milliseconds(backoff);
  return ReviveIfDead();
}

void SupervisedChild::KillIfSilent(const nlohmann::json& workers) {
  bool dead = false;
  for (const auto& w : workers) {
    // A relaunched daemon is its old self's record until it registers: judged by its pid.
    if (w.value("worker", "") == worker_id && w.value("pid", int64_t(0)) == int64_t(pid))
      dead = !w.value("alive", true);
  }
  if (!dead || pid <= 0) {
    dead_since.reset();
    return;
  }
  const auto now = SteadyClock::now();
  if (!dead_since) dead_since = now;
  if (now - *dead_since < std::chrono::milliseconds(relaunch_dead_after_ms)) return;
  std::fprintf(stderr,
               "\nmoerun: %s (pid %d) runs but the coordinator has counted it dead for %lld ms "
               "(frozen or cut off); killing it\n",
               name.c_str(), pid, (long long)relaunch_dead_after_ms);
  kill(pid, SIGKILL);  // its trainers go with it (they die with their daemon)
  dead_since.reset();
}

void StopChild(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(kChildStopTimeoutMs);
  int status;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (SteadyClock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
  }
}

bool ChildAlive(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

}  // namespace moerun::cli
