// moerun launch --nproc N JOB.yaml --run-dir DIR [--steps N] [--resume]
// Starts N trainer processes on this machine with a static rendezvous: rank r listens on
// ipc://@moerun-<launcher pid>-<r>. Rank 0's output is the run's; the others log to
// <run dir>/train-rank-R.log. If a rank fails, the others are stopped and its exit code is
// returned. Ranks run in process groups of their own and die with the launcher; SIGINT and
// SIGTERM are passed on to every rank, which checkpoints and exits 130 (torchrun's way).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "common/subprocess.h"
#include "common/timeouts.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/run_dir.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::cli {
namespace {

volatile sig_atomic_t g_forward_signal = 0;  // SIGINT or SIGTERM to pass on to the ranks
void OnStopSignal(int sig) { g_forward_signal = sig; }

// While it lives, SIGINT and SIGTERM are recorded for the ranks instead of ending this
// process; the wait loop passes them on.
class PassedOnStopSignals {
 public:
  PassedOnStopSignals() {
    struct sigaction stop = {};
    stop.sa_handler = OnStopSignal;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, &old_int_);
    sigaction(SIGTERM, &stop, &old_term_);
  }
  ~PassedOnStopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

struct LaunchArgs {
  std::string file, run_dir;
  int nproc = 0;
  int64_t steps = 0;
  bool resume = false, no_progress = false;
  int64_t timeout_ms = kDataPlaneTimeoutMs;
};

int RunLaunch(const LaunchArgs& a) {
  LoadedJobSpec loaded = LoadJobSpecFile(a.file);
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status gpu = trainer::TrainerSupport(loaded.spec); !gpu.ok()) {
    // Refused here rather than by every trainer after the job is placed.
    std::fprintf(stderr, "moerun %s: %s\n", "launch", gpu.message().c_str());
    return kExitUnsupported;
  }
  if (Status s = CheckRunDirModel(loaded, a.file, a.run_dir); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return kExitInvalidConfig;
  }
  const int64_t world = loaded.spec.parallel.world_size();
  if (a.nproc != world) {
    std::fprintf(stderr,
                 "moerun launch: the job needs pipeline x data = %lld processes, --nproc is %d\n",
                 (long long)world, a.nproc);
    return kExitInvalidConfig;
  }
  std::string endpoints;
  for (int r = 0; r < a.nproc; ++r) {
    endpoints += (r ? "," : "") + std::string("ipc://@moerun-") + std::to_string(getpid()) + "-" +
                 std::to_string(r);
  }
  PassedOnStopSignals signals;  // before any rank starts
  std::vector<pid_t> pids;
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < a.nproc; ++r) {
    std::vector<std::string> args = {"moerun",
                                     "train",
                                     a.file,
                                     "--run-dir",
                                     a.run_dir,
                                     "--rank",
                                     std::to_string(r),
                                     "--world",
                                     std::to_string(a.nproc),
                                     "--endpoints",
                                     endpoints,
                                     "--data-plane-timeout-ms",
                                     std::to_string(a.timeout_ms)};
    if (a.steps > 0) args.insert(args.end(), {"--steps", std::to_string(a.steps)});
    if (a.resume) args.push_back("--resume");
    if (a.no_progress || r != 0) args.push_back("--no-progress");
    auto pid = Spawn(
        {"/proc/self/exe", args, r != 0 ? "/dev/null" : "", "", SIGKILL, TrainerEnvironment()});
    if (!pid.ok()) {
      std::fprintf(stderr, "moerun launch: rank %d: %s\n", r, pid.status().message().c_str());
      for (pid_t p : pids) kill(-p, SIGKILL);
      return kExitFailure;
    }
    pids.push_back(pid.value());
  }
  int result = kExitOk, failed_rank = -1;
  size_t running = pids.size();
  while (running > 0) {
    if (const int sig = g_forward_signal; sig != 0) {
      g_forward_signal = 0;
      for (pid_t p : pids) kill(-p, sig);
    }
    // Polled, not blocking: a signal that lands between the check above and a blocking wait
    // would wait for a rank to exit before it is passed on.
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
      continue;
    }
    if (pid < 0) break;
    --running;
    const int rank = int(std::find(pids.begin(), pids.end(), pid) - pids.begin());
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && failed_rank < 0) {
      failed_rank = rank;
      result = code;
      std::fprintf(stderr, "moerun launch: rank %d exited with %s %d; stopping the others\n", rank,
                   WIFEXITED(status) ? "code" : "signal",
                   WIFEXITED(status) ? code : WTERMSIG(status));
      for (pid_t p : pids)
        if (p != pid) kill(-p, SIGTERM);
    }
  }
  return result;
}

}  // namespace

void AddLaunchCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<LaunchArgs>();
  CLI::App* cmd =
      app.add_subcommand("launch", "Train a job with N trainer processes on this machine");
  cmd->add_option("--nproc", a->nproc, "processes: pipeline x data of the job")->required();
  cmd->add_option("file", a->file, "job spec YAML file")->required();
  cmd->add_option("--run-dir", a->run_dir, "directory for metrics.jsonl, logs, checkpoints")
      ->required();
  cmd->add_option("--steps", a->steps, "train this many steps instead of train.steps")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--resume", a->resume, "continue from the newest readable checkpoint");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar, even on a terminal");
  cmd->add_option("--data-plane-timeout-ms", a->timeout_ms,
                  "a data-plane call waiting longer fails its rank")
      ->capture_default_str();
  cmd->callback([a, exit_code] { *exit_code = RunLaunch(*a); });
}

}  // namespace moerun::cli
