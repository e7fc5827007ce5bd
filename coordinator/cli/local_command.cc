// moerun local JOB.yaml [--run-dir DIR] [--workers N] [--steps N] [--no-progress]
// The embedded cluster (docs/architecture.md §1): a coordinator and N worker daemons on this
// machine, the same binaries and protocol as a cluster, with keys generated on first use. It
// submits the job, shows its progress until it ends, prints a summary and stops the daemons. State:
//   <run dir>/control/coordinator/   the coordinator's state dir (keys, RocksDB, log)
//   <run dir>/control/keys/          the client keys the CLI, daemons and trainers share
//   <run dir>/control/worker-I/      daemon I's state dir (trainer logs)
// The job resumes from checkpoints already in the run dir, so running it again continues (or
// finds complete) the previous run. Ctrl-C cancels the job and stops everything. A coordinator
// or daemon that dies is relaunched; so is a daemon whose process lives while the coordinator
// has counted it dead for kLocalSilentDaemonMs (frozen, deadlocked). Once the job ends the
// exit code says how: 0 SUCCEEDED, 75 STOPPED (`moerun stop`: run it again to continue), 130
// cancelled by Ctrl-C, 1 otherwise.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/duration_text.h"
#include "common/exit_codes.h"
#include "common/shm_dir.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/control_client.h"
#include "coordinator/cli/job_follower.h"
#include "coordinator/cli/run_dir.h"
#include "coordinator/cli/supervised_child.h"

namespace moerun::cli {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted.store(true); }

struct LocalArgs {
  std::string file, run_dir;
  int64_t workers = 0, steps = 0, linger_s = 0;
  int64_t relaunch_dead_after_ms = kLocalSilentDaemonMs;
  bool no_progress = false;
  bool insecure_data_plane = false;
};

int RunLocal(const LocalArgs& a) {
  LoadedJobSpec loaded = LoadJobSpecFile(a.file);
  const JobSpec& spec = loaded.spec;
  const std::string run_dir =
      fs::absolute(a.run_dir.empty() ? "runs/" + spec.name : a.run_dir).lexically_normal().string();
  if (int refused = CheckJobBeforeStart(loaded, a.file, a.steps, run_dir, "moerun local"))
    return refused;
  const int64_t world = spec.parallel.world_size();
  const int64_t workers =
      std::clamp<int64_t>(a.workers > 0 ? a.workers : spec.resources.workers, 1, world);
  const int64_t slots = (world + workers - 1) / workers;
  const std::string control = run_dir + "/control";
  const std::string coord_dir = control + "/coordinator", keys_dir = control + "/keys";
  Status s = PrepareClusterKeys(coord_dir, keys_dir, "moerun local");
  if (!s.ok()) {
    std::fprintf(stderr, "moerun local: %s\n", s.message().c_str());
    return kExitFailure;
  }
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  fs::remove(coord_dir + "/endpoint");
  fs::remove(coord_dir + "/http_endpoint");
  const auto& ft = spec.fault_tolerance;
  SupervisedChild coord{
      "the coordinator",
      {(bin / "moerun-coordinator").string(), "--state-dir", coord_dir, "--bind",
       "tcp://127.0.0.1:*", "--heartbeat-interval-ms", std::to_string(ft.heartbeat_interval_ms),
       "--heartbeat-timeout-ms", std::to_string(ft.heartbeat_timeout_ms), "--http", "127.0.0.1:0"},
      control + "/coordinator.out"};
  if (a.insecure_data_plane) coord.args.push_back("--insecure-data-plane");
  coord.Launch();
  std::vector<SupervisedChild> daemons;
  // The daemons' memory snapshots, under one root this command owns: a daemon it had to kill
  // (frozen at the end, say) cannot remove its own, so the root goes once all are stopped.
  const std::string memory_root = ShmDirFor("local-", control);
  auto shutdown = [&] {
    for (auto it = daemons.rbegin(); it != daemons.rend(); ++it) StopChild(it->pid);
    StopChild(coord.pid);
    std::error_code ec;
    fs::remove_all(memory_root, ec);
  };
  const std::string endpoint = WaitForEndpoint(coord_dir, coord, "moerun local");
  if (endpoint.empty()) return kExitFailure;
  coord.args[4] = endpoint;  // a relaunched coordinator listens where the daemons look
  // fault_tolerance.spares extra daemons: free slots a failed rank can move to.
  const int64_t spares = ft.spares;
  for (int64_t i = 0; i < workers + spares; ++i) {
    const std::string n = std::to_string(i);
    daemons.push_back({"worker local-" + n,
                       {(bin / "moerun-worker").string(), "--coordinator", endpoint, "--keys",
                        keys_dir, "--state-dir", control + "/worker-" + n, "--id", "local-" + n,
                        "--devices", std::to_string(slots), "--data-host", "127.0.0.1",
                        "--memory-dir", memory_root + "/worker-" + n},
                       control + "/worker-" + n + ".out"});
    daemons.back().worker_id = "local-" + n;
    daemons.back().relaunch_dead_after_ms = a.relaunch_dead_after_ms;
    daemons.back().Launch();
  }
  std::string http_url;
  std::ifstream(coord_dir + "/http_endpoint") >> http_url;
  if (!http_url.empty()) {
    std::fprintf(stderr,
                 "moerun local: dashboard at %s/, HTTP API at %s/api/status, Prometheus at "
                 "%s/metrics\n",
                 http_url.c_str(), http_url.c_str(), http_url.c_str());
  }
  std::fprintf(
      stderr, "moerun local: coordinator at %s, %lld worker(s) x %lld slot(s)%s; state in %s\n",
      endpoint.c_str(), (long long)workers, (long long)slots,
      spares > 0 ? (" + " + std::to_string(spares) + " spare(s)").c_str() : "", control.c_str());

  auto client = ControlClient::Connect(endpoint, keys_dir);
  if (!client.ok()) {
    std::fprintf(stderr, "moerun local: %s\n", client.status().message().c_str());
    shutdown();
    return kExitFailure;
  }
  auto submitted = SubmitResumingJob(*client.value(), a.file, run_dir, a.steps);
  if (!submitted.ok()) {
    std::fprintf(stderr, "moerun local: %s\n", submitted.status().message().c_str());
    shutdown();
    return kExitFailure;
  }
  const std::string job = submitted.value();
  std::fprintf(stderr, "moerun local: job %s submitted (%lld ranks), run dir %s\n", job.c_str(),
               (long long)world, run_dir.c_str());

  g_interrupted.store(false);
  auto old_int = std::signal(SIGINT, OnInterrupt);
  auto old_term = std::signal(SIGTERM, OnInterrupt);
  const auto t0 = SteadyClock::now();
  FollowOptions follow;
  follow.who = "moerun local";
  follow.progress_line = !a.no_progress && isatty(STDERR_FILENO);
  follow.interrupted = &g_interrupted;
  FollowResult result = FollowJob(*client.value(), job, coord, daemons, follow);
  if (result.fatal_exit != 0) {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    shutdown();
    return result.fatal_exit;
  }
  if (a.linger_s > 0 && !http_url.empty() && !g_interrupted.load()) {
    std::fprintf(stderr,
                 "moerun local: the dashboard stays up at %s/ for %s (Ctrl-C ends it sooner)\n",
                 http_url.c_str(), DurationText(double(a.linger_s)).c_str());
    const auto until = SteadyClock::now() + std::chrono::seconds(a.linger_s);
    while (!g_interrupted.load() && SteadyClock::now() < until) {
      coord.ReviveIfDead();
      std::this_thread::sleep_for(std::chrono::milliseconds(kLocalPollMs));
    }
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  shutdown();
  const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  return ReportOutcome(result, job, run_dir, wall, "moerun local");
}

}  // namespace

void AddLocalCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<LocalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "local", "Run a job on this machine through a local coordinator and worker daemons");
  cmd->add_option("file", a->file, "job spec YAML file")->required();
  cmd->add_option("--run-dir", a->run_dir, "run directory [runs/<job name>]");
  cmd->add_option("--workers", a->workers, "worker daemons to start [resources.workers]")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--steps", a->steps, "train this many steps instead of train.steps")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-progress", a->no_progress, "no progress line, even on a terminal");
  cmd->add_flag("--insecure-data-plane", a->insecure_data_plane,
                "trainers talk over plain sockets instead of CURVE (what it costs: "
                "bench/data_plane_curve_cost.sh)");
  cmd->add_option("--relaunch-dead-after-ms", a->relaunch_dead_after_ms,
                  "kill and relaunch a daemon whose process lives but which the coordinator "
                  "has counted dead this long (frozen, deadlocked) [500]")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--linger", a->linger_s,
                  "keep the coordinator's dashboard and API up this many seconds after the job "
                  "ends [0]")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([a, exit_code] { *exit_code = RunLocal(*a); });
}

}  // namespace moerun::cli
