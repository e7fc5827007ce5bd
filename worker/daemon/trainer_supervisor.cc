#include "worker/daemon/trainer_supervisor.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "common/subprocess.h"
#include "common/timeouts.h"

namespace moerun::worker {

std::string TrainerExit::Describe() const {
  if (!cause.empty()) return cause;
  if (signal != 0)
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exited with code " + std::to_string(exit_code);
}

TrainerSupervisor::TrainerSupervisor(std::function<void(const TrainerExit&)> on_exit)
    : on_exit_(std::move(on_exit)) {}

TrainerSupervisor::~TrainerSupervisor() {
  StopWhere([](const TrainerLaunch&) { return true; }, kShutdownGraceMs);
}

Result<pid_t> TrainerSupervisor::Start(const TrainerLaunch& launch) {
  if (launch.argv.empty()) return Status::InvalidArgument("trainer launch without a program");
  // Its own group: StopJob signals the trainer and everything it started. A trainer never
  // outlives its daemon: a daemon that died (SIGKILL included) cannot fence it any more, and
  // its replacement does not know it.
  const std::string log = launch.log_path.empty() ? "/dev/null" : launch.log_path;
  auto spawned = Spawn({launch.argv[0], launch.argv, log, log, SIGKILL});
  if (!spawned.ok()) return spawned.status().WithContext("trainer");
  const pid_t pid = spawned.value();
  std::lock_guard<std::mutex> lock(mu_);
  children_[pid] = launch;
  return pid;
}

namespace {

// Whether the process is stopped (by a signal, or traced): state T or t in /proc/<pid>/stat.
bool Stopped(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const size_t paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < stat.size() &&
         (stat[paren + 2] == 'T' || stat[paren + 2] == 't');
}

}  // namespace

void TrainerSupervisor::set_frozen_timeout_ms(int64_t ms) {
  std::lock_guard<std::mutex> lock(mu_);
  frozen_timeout_ms_ = ms;
}

int TrainerSupervisor::Poll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (frozen_timeout_ms_ > 0) {
      for (const auto& [pid, launch] : children_) {
        if (killed_frozen_.count(pid)) continue;
        if (!Stopped(pid)) {
          stopped_since_.erase(pid);
          continue;
        }
        const auto since = stopped_since_.emplace(pid, now).first->second;
        const auto frozen_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count();
        if (frozen_ms >= frozen_timeout_ms_) {
          kill(-pid, SIGKILL);
          killed_frozen_[pid] = "frozen (stopped, state T) for " + std::to_string(frozen_ms) +
                                " ms: killed by its daemon";
        }
      }
    }
    for (auto it = kill_at_.begin(); it != kill_at_.end();) {
      if (!children_.count(it->first)) {
        it = kill_at_.erase(it);
      } else if (now >= it->second) {
        kill(-it->first, SIGKILL);
        it->second = std::chrono::steady_clock::time_point::max();  // once
        ++it;
      } else {
        ++it;
      }
    }
  }
  int reaped = 0;
  while (true) {
    TrainerExit e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (children_.empty()) break;
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      auto it = children_.find(pid);
      if (it == children_.end()) continue;  // not ours
      e = {it->second.job_id,
           it->second.generation,
           it->second.rank,
           pid,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           WIFSIGNALED(status) ? WTERMSIG(status) : 0,
           {}};
      if (auto f = killed_frozen_.find(pid); f != killed_frozen_.end()) {
        e.cause = f->second;
        killed_frozen_.erase(f);
      }
      stopped_since_.erase(pid);
      children_.erase(it);
    }
    ++reaped;
    if (on_exit_) on_exit_(e);
  }
  return reaped;
}

void TrainerSupervisor::StopWhere(const std::function<bool(const TrainerLaunch&)>& match,
                                  int64_t grace_ms) {
  std::vector<pid_t> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [pid, l] : children_)
      if (match(l)) targets.push_back(pid);
  }
  for (pid_t p : targets) kill(-p, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  auto alive = [&] {
    Poll();
    std::lock_guard<std::mutex> lock(mu_);
    for (pid_t p : targets)
      if (children_.count(p)) return true;
    return false;
  };
  while (alive() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
  }
  for (pid_t p : targets) kill(-p, SIGKILL);  // harmless for the ones already gone
  while (alive()) std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
}

void TrainerSupervisor::StopJob(const std::string& job_id, int64_t grace_ms) {
  StopWhere([&](const TrainerLaunch& l) { return l.job_id == job_id; }, grace_ms);
}

void TrainerSupervisor::StopOlderThan(const std::string& job_id, uint64_t generation,
                                      int64_t grace_ms) {
  StopWhere([&](const TrainerLaunch& l) { return l.job_id == job_id && l.generation < generation; },
            grace_ms);
}

void TrainerSupervisor::Terminate(const std::string& job_id, uint64_t below_generation,
                                  int64_t grace_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  for (const auto& [pid, l] : children_) {
    if (l.job_id != job_id || l.generation >= below_generation) continue;
    auto it = kill_at_.find(pid);
    if (it != kill_at_.end()) {
      it->second = std::min(it->second, deadline);  // a shorter grace wins
      continue;
    }
    kill(-pid, SIGTERM);
    kill_at_[pid] = deadline;
  }
}

size_t TrainerSupervisor::Count(const std::string& job_id, uint64_t below_generation) const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [pid, l] : children_) n += l.job_id == job_id && l.generation < below_generation;
  return n;
}

size_t TrainerSupervisor::Running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return children_.size();
}

}  // namespace moerun::worker
