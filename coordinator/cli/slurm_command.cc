// moerun slurm JOB.yaml [--run-dir DIR] [--steps N] [--slots-per-node N] [--no-requeue]
// A job inside a Slurm allocation (docs/cluster.md): the coordinator on the node this runs on
// (the batch host), one worker daemon per allocated node through `srun`, the job submitted
// and followed as `moerun local` does. Slurm's warning before a preemption or the time limit
// (`#SBATCH --signal=B:USR1@120`) stops the job after a checkpoint; the command then requeues
// the Slurm job (`scontrol requeue`) and exits 75, and the requeued job resumes from that
// checkpoint. SIGTERM (the time limit itself, `scancel`) also stops it after a checkpoint, and
// exits 75 without a requeue. State, on a filesystem every node sees:
//   <run dir>/control/coordinator/      the coordinator's state dir (keys, RocksDB, log)
//   <run dir>/control/keys/             the client keys the CLI, daemons and trainers share
//   <run dir>/control/worker-<node>/    that node's daemon's state dir (trainer logs)
//   <run dir>/control/worker-<node>.out its srun's output
// A daemon whose srun ends is relaunched (with a backoff when it fails at once: a node Slurm
// took away). Exit codes: 0 SUCCEEDED, 75 STOPPED (and requeued), 130 Ctrl-C, 2 a bad spec or
// an allocation too small, 1 otherwise.
#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "common/exit_codes.h"
#include "common/slurm_allocation.h"
#include "common/spec_loader.h"
#include "common/subprocess.h"
#include "common/timeouts.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/job_follower.h"

namespace moerun::cli {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};
std::atomic<bool> g_stop{false};    // SIGUSR1 or SIGTERM: stop after a checkpoint
std::atomic<bool> g_warned{false};  // SIGUSR1 (Slurm's warning): and requeue
void OnInterrupt(int) { g_interrupted.store(true); }
void OnStopWarning(int) {
  g_warned.store(true);
  g_stop.store(true);
}
void OnTerminate(int) { g_stop.store(true); }

struct SlurmArgs {
  std::string file, run_dir, coordinator_host, srun = "srun", scontrol = "scontrol";
  int64_t steps = 0, slots_per_node = 0;
  bool no_progress = false, no_requeue = false, insecure_data_plane = false;
};

// `program` as a path: itself when it has a '/', else the first executable of that name on
// PATH; empty when there is none.
std::string FindProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate =
        (end > start ? dirs.substr(start, end - start) : ".") + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// The IPv4 address other nodes reach `node` at: --coordinator-host, else its NodeAddr in
// Slurm's configuration (`scontrol show node`), resolved.
Result<std::string> NodeAddress(const SlurmArgs& a, const std::string& node) {
  std::string host = a.coordinator_host;
  if (host.empty()) {
    auto shown = CommandOutput(a.scontrol + " show node -o '" + node + "'");
    if (!shown.ok()) return shown.status();
    std::smatch m;
    if (!std::regex_search(*shown, m, std::regex("NodeAddr=(\\S+)")))
      return Status::Unavailable("`scontrol show node " + node + "` gives no NodeAddr: " + *shown);
    host = m[1];
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res)
    return Status::Unavailable("cannot resolve " + host + " (node " + node +
                               "): pass --coordinator-host ADDRESS");
  char ip[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, ip, sizeof ip);
  freeaddrinfo(res);
  return std::string(ip);
}

// Trainer slots per node: --slots-per-node, else GPUs (backend cuda) or CPUs over
// resources.threads_per_trainer, the smallest node deciding. 0 (with why on stderr): none.
int64_t SlotsPerNode(const SlurmArgs& a, const SlurmAllocation& alloc, const JobSpec& spec) {
  if (a.slots_per_node > 0) return a.slots_per_node;
  if (spec.resources.backend == Backend::kCuda) {
    if (alloc.gpus_per_node <= 0) {
      std::fprintf(stderr,
                   "moerun slurm: resources.backend is cuda but Slurm job %s has no GPUs "
                   "(SLURM_GPUS_PER_NODE / SLURM_GPUS_ON_NODE unset): ask for them with "
                   "#SBATCH --gpus-per-node=N\n",
                   alloc.job_id.c_str());
      return 0;
    }
    return alloc.gpus_per_node;
  }
  int64_t fewest = alloc.cpus.front();
  for (int64_t c : alloc.cpus) fewest = std::min(fewest, c);
  return std::max<int64_t>(1, fewest / std::max<int64_t>(1, spec.resources.threads_per_trainer));
}

int RunSlurm(const SlurmArgs& a) {
  auto alloc = ReadSlurmAllocation([](const char* n) { return std::getenv(n); });
  if (!alloc.ok()) {
    std::fprintf(stderr, "moerun slurm: %s\n", alloc.status().message().c_str());
    return kExitInvalidConfig;
  }
  LoadedJobSpec loaded = LoadJobSpecFile(a.file);
  const JobSpec& spec = loaded.spec;
  const std::string run_dir =
      fs::absolute(a.run_dir.empty() ? "runs/" + spec.name : a.run_dir).lexically_normal().string();
  if (int refused = CheckJobBeforeStart(loaded, a.file, a.steps, run_dir, "moerun slurm"))
    return refused;
  const int64_t slots = SlotsPerNode(a, *alloc, spec);
  if (slots <= 0) return kExitInvalidConfig;
  const int64_t world = spec.parallel.world_size();
  const int64_t nodes = int64_t(alloc->nodes.size());
  if (nodes * slots < world) {
    std::fprintf(stderr,
                 "moerun slurm: %s needs %lld trainer slots; Slurm job %s has %lld node(s) x %lld "
                 "slot(s): ask for %lld node(s) (#SBATCH --nodes=%lld), or set --slots-per-node\n",
                 a.file.c_str(), (long long)world, alloc->job_id.c_str(), (long long)nodes,
                 (long long)slots, (long long)((world + slots - 1) / slots),
                 (long long)((world + slots - 1) / slots));
    return kExitInvalidConfig;
  }
  const std::string srun = FindProgram(a.srun);
  if (srun.empty()) {
    std::fprintf(stderr,
                 "moerun slurm: %s is not on PATH: run this on a Slurm node, or pass --srun PATH\n",
                 a.srun.c_str());
    return kExitInvalidConfig;
  }
  auto address = NodeAddress(a, alloc->this_node);
  if (!address.ok()) {
    std::fprintf(stderr, "moerun slurm: %s\n", address.status().message().c_str());
    return kExitFailure;
  }
  const std::string control = run_dir + "/control";
  const std::string coord_dir = control + "/coordinator", keys_dir = control + "/keys";
  if (Status s = PrepareClusterKeys(coord_dir, keys_dir, "moerun slurm"); !s.ok()) {
    std::fprintf(stderr, "moerun slurm: %s\n", s.message().c_str());
    return kExitFailure;
  }
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  fs::remove(coord_dir + "/endpoint");
  fs::remove(coord_dir + "/http_endpoint");
  const auto& ft = spec.fault_tolerance;
  SupervisedChild coord{"the coordinator",
                        {(bin / "moerun-coordinator").string(), "--state-dir", coord_dir, "--bind",
                         "tcp://" + *address + ":*", "--heartbeat-interval-ms",
                         std::to_string(ft.heartbeat_interval_ms), "--heartbeat-timeout-ms",
                         std::to_string(ft.heartbeat_timeout_ms), "--http", "127.0.0.1:0"},
                        control + "/coordinator.out"};
  if (a.insecure_data_plane) coord.args.push_back("--insecure-data-plane");
  coord.Launch();
  const std::string endpoint = WaitForEndpoint(coord_dir, coord, "moerun slurm");
  if (endpoint.empty()) return kExitFailure;
  coord.args[4] = endpoint;  // a relaunched coordinator listens where the daemons look
  std::vector<SupervisedChild> daemons;
  for (const auto& node : alloc->nodes) {
    std::vector<std::string> args = {srun,
                                     "--nodes=1",
                                     "--ntasks=1",
                                     "--nodelist=" + node,
                                     "--overlap",
                                     "--kill-on-bad-exit=0",
                                     "--cpu-bind=none",
                                     "--job-name=moerun-worker"};
    if (spec.resources.backend == Backend::kCuda)
      args.push_back("--gpus-per-node=" + std::to_string(alloc->gpus_per_node));
    for (std::string s :
         {(bin / "moerun-worker").string(), std::string("--coordinator"), endpoint,
          std::string("--keys"), keys_dir, std::string("--state-dir"), control + "/worker-" + node,
          std::string("--id"), node, std::string("--devices"), std::to_string(slots),
          std::string("--backend"),
          std::string(spec.resources.backend == Backend::kCuda ? "cuda" : "cpu"),
          std::string("--data-host"), std::string("auto"), std::string("--memory-dir"),
          "/dev/shm/moerun-slurm-" + alloc->job_id + "-" + node})
      args.push_back(std::move(s));
    daemons.push_back(
        {"worker " + node + " (srun)", std::move(args), control + "/worker-" + node + ".out"});
    daemons.back().worker_id = node;
    daemons.back().Launch();
  }
  auto shutdown = [&] {
    for (auto it = daemons.rbegin(); it != daemons.rend(); ++it) StopChild(it->pid);
    StopChild(coord.pid);
  };
  std::string http_url;
  std::ifstream(coord_dir + "/http_endpoint") >> http_url;
  std::fprintf(stderr,
               "moerun slurm: Slurm job %s%s, coordinator at %s on %s, %lld node(s) x %lld "
               "slot(s) for %lld rank(s); state in %s\n",
               alloc->job_id.c_str(),
               alloc->restart_count > 0
                   ? (" (requeued " + std::to_string(alloc->restart_count) + " time(s))").c_str()
                   : "",
               endpoint.c_str(), alloc->this_node.c_str(), (long long)nodes, (long long)slots,
               (long long)world, control.c_str());
  if (!http_url.empty())
    std::fprintf(stderr, "moerun slurm: dashboard at %s/ on %s (ssh -L to reach it)\n",
                 http_url.c_str(), alloc->this_node.c_str());
  auto client = ControlClient::Connect(endpoint, keys_dir);
  auto submitted = client.ok() ? SubmitResumingJob(*client.value(), a.file, run_dir, a.steps)
                               : Result<std::string>(client.status());
  if (!submitted.ok()) {
    std::fprintf(stderr, "moerun slurm: %s\n", submitted.status().message().c_str());
    shutdown();
    return kExitFailure;
  }
  const std::string job = submitted.value();
  std::fprintf(stderr, "moerun slurm: job %s submitted (%lld ranks), run dir %s\n", job.c_str(),
               (long long)world, run_dir.c_str());

  g_interrupted.store(false);
  g_stop.store(false);
  g_warned.store(false);
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGUSR1, OnStopWarning);
  std::signal(SIGTERM, OnTerminate);
  const auto t0 = SteadyClock::now();
  FollowOptions follow;
  follow.who = "moerun slurm";
  follow.progress_line = !a.no_progress && isatty(STDERR_FILENO);
  follow.kill_silent_daemons = false;  // other hosts' daemons: Slurm's and systemd's to judge
  follow.interrupted = &g_interrupted;
  follow.stop_asked = &g_stop;
  follow.stop_reason = [] {
    return std::string(g_warned.load()
                           ? "Slurm's warning (SIGUSR1) before a preemption or the time limit"
                           : "Slurm is ending the job (SIGTERM)");
  };
  FollowResult result = FollowJob(*client.value(), job, coord, daemons, follow);
  shutdown();
  if (result.fatal_exit != 0) return result.fatal_exit;
  const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const int code = ReportOutcome(result, job, run_dir, wall, "moerun slurm");
  // Requeued only after Slurm's warning: SIGTERM alone is also what `scancel` sends.
  if (code == kExitStopped && g_warned.load() && !a.no_requeue) {
    // Last: requeueing ends this Slurm job, this process included.
    std::fprintf(stderr,
                 "moerun slurm: requeueing Slurm job %s; it continues from the last "
                 "checkpoint when it runs again\n",
                 alloc->job_id.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    auto r = CommandOutput(a.scontrol + " requeue " + alloc->job_id);
    if (!r.ok()) {
      std::fprintf(stderr, "moerun slurm: %s (submit the script again to continue)\n",
                   r.status().message().c_str());
    }
  }
  return code;
}

}  // namespace

void AddSlurmCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<SlurmArgs>();
  CLI::App* cmd = app.add_subcommand(
      "slurm", "Run a job inside a Slurm allocation: coordinator here, a daemon per node (srun)");
  cmd->add_option("file", a->file, "job spec YAML file")->required();
  cmd->add_option("--run-dir", a->run_dir,
                  "run directory, on a filesystem every node sees [runs/<job name>]");
  cmd->add_option("--steps", a->steps, "train this many steps instead of train.steps")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--slots-per-node", a->slots_per_node,
                  "trainers per node [GPUs per node for cuda; CPUs / "
                  "resources.threads_per_trainer for cpu]")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--coordinator-host", a->coordinator_host,
                  "address the other nodes reach this one at [its NodeAddr in Slurm]");
  cmd->add_flag("--no-requeue", a->no_requeue,
                "after a stop asked by Slurm's warning (SIGUSR1), exit 75 without `scontrol "
                "requeue`");
  cmd->add_flag("--no-progress", a->no_progress, "no progress line, even on a terminal");
  cmd->add_flag("--insecure-data-plane", a->insecure_data_plane,
                "trainers talk over plain sockets instead of CURVE");
  cmd->add_option("--srun", a->srun, "the srun program [srun]");
  cmd->add_option("--scontrol", a->scontrol, "the scontrol program [scontrol]");
  cmd->callback([a, exit_code] { *exit_code = RunSlurm(*a); });
}

}  // namespace moerun::cli
