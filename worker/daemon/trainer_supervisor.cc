#include "worker/daemon/trainer_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace moerun::worker {

std::string TrainerExit::Describe() const {
  if (signal != 0)
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exited with code " + std::to_string(exit_code);
}

TrainerSupervisor::TrainerSupervisor(std::function<void(const TrainerExit&)> on_exit)
    : on_exit_(std::move(on_exit)) {}

TrainerSupervisor::~TrainerSupervisor() {
  StopWhere([](const TrainerLaunch&) { return true; }, 1000);
}

Result<pid_t> TrainerSupervisor::Start(const TrainerLaunch& launch) {
  if (launch.argv.empty()) return Status::InvalidArgument("trainer launch without a program");
  const int log_fd =
      launch.log_path.empty()
          ? open("/dev/null", O_WRONLY)
          : open(launch.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return Status::IOError("trainer log " + launch.log_path + ": " + strerror(errno));
  std::vector<char*> argv;
  for (const auto& a : launch.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return Status::Unavailable(std::string("fork: ") + strerror(errno));
  }
  if (pid == 0) {
    setpgid(0, 0);  // its own group: StopJob signals the trainer and everything it started
    // A trainer never outlives its daemon: a daemon that died (SIGKILL included) cannot
    // fence it any more, and its replacement does not know it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the daemon died before prctl took effect
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  setpgid(pid, pid);  // also from the parent, so there is no window before the child does it
  std::lock_guard<std::mutex> lock(mu_);
  children_[pid] = launch;
  return pid;
}

int TrainerSupervisor::Poll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
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
           WIFSIGNALED(status) ? WTERMSIG(status) : 0};
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
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (pid_t p : targets) kill(-p, SIGKILL);  // harmless for the ones already gone
  while (alive()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
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
