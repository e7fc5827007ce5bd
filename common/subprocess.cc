#include "common/subprocess.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace moerun {
namespace {

// -1 for "inherit"; else a descriptor that does not survive exec (dup2 makes the copy that
// does).
Result<int> OpenOutput(const std::string& path) {
  if (path.empty()) return -1;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(path + ": " + std::strerror(errno));
  return fd;
}

}  // namespace

Result<pid_t> Spawn(const SpawnOptions& o) {
  if (o.program.empty() || o.argv.empty())
    return Status::InvalidArgument("spawn: no program to run");
  auto out = OpenOutput(o.stdout_path);
  if (!out.ok()) return out.status();
  auto err = o.stderr_path == o.stdout_path ? out : OpenOutput(o.stderr_path);
  if (!err.ok()) {
    if (out.value() >= 0) close(out.value());
    return err.status();
  }
  std::vector<char*> argv;
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // The child's environment, built before the fork: the parent's, less what `environment`
  // replaces, plus `environment`.
  std::vector<std::string> replaced;
  for (const auto& e : o.environment) replaced.push_back(e.substr(0, e.find('=') + 1));
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    bool keep = true;
    for (const auto& name : replaced) keep = keep && std::strncmp(*e, name.c_str(), name.size());
    if (keep) envp.push_back(*e);
  }
  for (const auto& e : o.environment) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  std::fflush(stdout);  // nothing buffered is written twice
  std::fflush(stderr);
  // Signals wait until the child has reset its handlers: one that came between fork and exec
  // would run the parent's handler in the child (a daemon's SIGTERM flag, a test framework's
  // crash report) instead of ending it.
  sigset_t all, before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);
  const pid_t pid = fork();
  if (pid == 0) {
    for (int sig = 1; sig < NSIG; ++sig) {
      struct sigaction sa {};
      if (sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)
        signal(sig, SIG_DFL);
    }
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
    setpgid(0, 0);
    if (o.parent_death_signal != 0) {
      prctl(PR_SET_PDEATHSIG, o.parent_death_signal);
      if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    }
    if (o.stdin_fd >= 0) dup2(o.stdin_fd, STDIN_FILENO);
    if (out.value() >= 0) dup2(out.value(), STDOUT_FILENO);
    if (err.value() >= 0) dup2(err.value(), STDERR_FILENO);
    execve(o.program.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  const int saved = errno;
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (out.value() >= 0) close(out.value());
  if (err.value() >= 0 && err.value() != out.value()) close(err.value());
  if (pid < 0) return Status::Unavailable(std::string("fork: ") + std::strerror(saved));
  setpgid(pid, pid);  // also from the parent, so there is no window before the child does it
  return pid;
}

std::vector<std::string> TrainerEnvironment() {
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return {};
  return {"GLIBC_TUNABLES=glibc.malloc.hugetlb=1"};
}

Result<std::string> CommandOutput(const std::string& command) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return Status::IOError("cannot run " + command);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  if (rc != 0) return Status::Unavailable("`" + command + "` failed: " + out);
  return out;
}

}  // namespace moerun
