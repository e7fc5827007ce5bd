#include "worker/daemon/trainer_supervisor.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "common/limits.h"
#include "common/standby_role.h"
#include "common/subprocess.h"
#include "common/timeouts.h"

namespace moerun::worker {

std::string TrainerExit::Describe() const {
  const std::string how =
      signal != 0 ? "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")"
                  : "exited with code " + std::to_string(exit_code);
  return cause.empty() ? how : cause + " (" + how + ")";
}

TrainerSupervisor::TrainerSupervisor(std::function<void(const TrainerExit&)> on_exit)
    : on_exit_(std::move(on_exit)) {}

TrainerSupervisor::~TrainerSupervisor() {
  StopWhere([](const TrainerLaunch&) { return true; }, kShutdownGraceMs);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pid, standby] : standbys_) {
    close(standby.fd);  // it reads the end of its role and exits
    kill(-pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
}

Status TrainerSupervisor::StartStandby(const std::string& program, const std::string& log_path) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return Status::Unavailable(std::string("standby trainer: socketpair: ") + strerror(errno));
  SpawnOptions o{program,  {program, "standby", std::string(kStandbyTitleBytes, ' ')},
                 log_path, log_path,
                 SIGKILL,  TrainerEnvironment()};
  o.stdin_fd = fds[1];
  auto spawned = Spawn(o);
  close(fds[1]);
  if (!spawned.ok()) {
    close(fds[0]);
    return spawned.status().WithContext("standby trainer");
  }
  shutdown(fds[0], SHUT_RD);  // the standby never writes
  std::lock_guard<std::mutex> lock(mu_);
  standbys_[spawned.value()] = {program, fds[0]};
  return Status::OK();
}

size_t TrainerSupervisor::Standbys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return standbys_.size();
}

pid_t TrainerSupervisor::Activate(const TrainerLaunch& launch) {
  pid_t pid = -1;
  Standby standby;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = standbys_.begin(); it != standbys_.end(); ++it) {
      if (it->second.program != launch.argv[0]) continue;
      pid = it->first;
      standby = it->second;
      standbys_.erase(it);
      break;
    }
  }
  if (pid < 0) return -1;
  const std::string role = EncodeStandbyRole({launch.log_path, launch.argv});
  size_t sent = 0;
  while (sent < role.size()) {
    const ssize_t n = send(standby.fd, role.data() + sent, role.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += size_t(n);
  }
  close(standby.fd);  // the end of the role
  if (sent < role.size()) {
    kill(-pid, SIGKILL);  // gone or going; Poll reaps it as no trainer of ours
    return -1;
  }
  return pid;
}

Result<pid_t> TrainerSupervisor::Start(const TrainerLaunch& launch, bool* warm) {
  if (launch.argv.empty()) return Status::InvalidArgument("trainer launch without a program");
  // Its own group: StopJob signals the trainer and everything it started. A trainer never
  // outlives its daemon: a daemon that died (SIGKILL included) cannot fence it any more, and
  // its replacement does not know it.
  const std::string log = launch.log_path.empty() ? "/dev/null" : launch.log_path;
  std::unique_ptr<BeatFile> beat;
  if (!launch.beat_path.empty()) {
    auto created = BeatFile::Create(launch.beat_path, BeatFile::NowMs(), getpid());
    if (!created.ok()) return created.status().WithContext("trainer");
    beat = std::move(created.value());
  }
  pid_t pid = Activate(launch);
  if (warm != nullptr) *warm = pid > 0;
  if (pid < 0) {
    auto spawned = Spawn({launch.argv[0], launch.argv, log, log, SIGKILL, TrainerEnvironment()});
    if (!spawned.ok()) {
      if (beat) unlink(launch.beat_path.c_str());
      return spawned.status().WithContext("trainer");
    }
    pid = spawned.value();
  }
  std::lock_guard<std::mutex> lock(mu_);
  children_[pid] = launch;
  if (beat) beats_[pid] = std::move(beat);
  return pid;
}

namespace {

// kill_at_'s value once SIGKILL went out: never again.
constexpr auto kKillSent = std::chrono::steady_clock::time_point::max();

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
    const int64_t now_ms = BeatFile::NowMs();
    for (auto& [pid, beat] : beats_) beat->BeatDaemon(now_ms);
    if (frozen_timeout_ms_ > 0) {
      for (const auto& [pid, launch] : children_) {
        if (cause_.count(pid)) continue;
        if (!Stopped(pid)) {
          stopped_since_.erase(pid);
          // Running, yet its beat thread has not beaten for the timeout: hung.
          auto beat = beats_.find(pid);
          const int64_t last = beat == beats_.end() ? 0 : beat->second->trainer_ms();
          if (last > 0 && now_ms - last >= frozen_timeout_ms_) {
            kill(-pid, SIGKILL);
            cause_[pid] =
                "hung (no beat for " + std::to_string(now_ms - last) + " ms): killed by its daemon";
          }
          continue;
        }
        const auto since = stopped_since_.emplace(pid, now).first->second;
        const auto frozen_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count();
        if (frozen_ms >= frozen_timeout_ms_) {
          kill(-pid, SIGKILL);
          cause_[pid] = "frozen (stopped, state T) for " + std::to_string(frozen_ms) +
                        " ms: killed by its daemon";
        }
      }
    }
    for (auto it = kill_at_.begin(); it != kill_at_.end();) {
      if (!children_.count(it->first)) {
        it = kill_at_.erase(it);
      } else if (now >= it->second) {
        kill(-it->first, SIGKILL);
        it->second = kKillSent;
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
      if (children_.empty() && standbys_.empty()) break;
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (auto standby = standbys_.find(pid); standby != standbys_.end()) {
        close(standby->second.fd);  // a standby that ended before it had a role
        standbys_.erase(standby);
        continue;
      }
      auto it = children_.find(pid);
      if (it == children_.end()) continue;  // not ours
      e = {it->second.job_id,
           it->second.generation,
           it->second.rank,
           pid,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           WIFSIGNALED(status) ? WTERMSIG(status) : 0,
           {}};
      if (auto f = cause_.find(pid); f != cause_.end()) {
        e.cause = f->second;
        cause_.erase(f);
      }
      stopped_since_.erase(pid);
      if (auto b = beats_.find(pid); b != beats_.end()) {
        unlink(b->second->path().c_str());
        beats_.erase(b);
      }
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
                                  int64_t grace_ms, const std::string& cause) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  for (const auto& [pid, l] : children_) {
    if (l.job_id != job_id || l.generation >= below_generation) continue;
    if (!cause.empty()) cause_.emplace(pid, cause);  // the first reason stands
    auto it = kill_at_.find(pid);
    if (grace_ms <= 0) {  // a fence: no checkpoint to wait for, and the restart waits on it
      if (it == kill_at_.end() || it->second != kKillSent) kill(-pid, SIGKILL);
      kill_at_[pid] = kKillSent;
      continue;
    }
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

bool TrainerSupervisor::Killing() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pid, when] : kill_at_)
    if (when == kKillSent && children_.count(pid)) return true;
  return false;
}

size_t TrainerSupervisor::Running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return children_.size();
}

}  // namespace moerun::worker
