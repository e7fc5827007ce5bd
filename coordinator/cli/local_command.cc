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
// has counted it dead for kLocalSilentDaemonMs (frozen, deadlocked).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/control_socket.h"
#include "common/curve_auth.h"
#include "common/duration_text.h"
#include "common/exit_codes.h"
#include "common/shm_dir.h"
#include "common/spec_loader.h"
#include "common/subprocess.h"
#include "common/timeouts.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/control_client.h"
#include "coordinator/cli/run_dir.h"
#include "coordinator/cli/status_format.h"
#include "worker/trainer/trainer_support.h"

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

// A child in its own process group (Ctrl-C reaches only us; we stop it in order), its
// output appended to `log`, killed should this process die; -1 when it could not start.
pid_t SpawnChild(const std::vector<std::string>& args, const std::string& log) {
  auto pid = Spawn({args[0], args, log, log, SIGKILL});
  if (!pid.ok()) {
    std::fprintf(stderr, "moerun local: cannot start %s: %s\n", args[0].c_str(),
                 pid.status().message().c_str());
    return -1;
  }
  return pid.value();
}

bool Alive(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

// A process `moerun local` keeps alive: relaunched with the same arguments when it dies, as
// the fault-recovery design asks of the embedded cluster.
struct Child {
  std::string name;
  std::vector<std::string> args;
  std::string log;
  pid_t pid = -1;
  int relaunches = 0;
  int fatal_exit = 0;       // it exited with a code no relaunch can fix (an unwritable state dir)
  std::string worker_id{};  // a daemon's --id
  std::optional<SteadyClock::time_point> dead_since{};  // the coordinator counts it dead
  int64_t relaunch_dead_after_ms = kLocalSilentDaemonMs;

  void Launch() { pid = SpawnChild(args, log); }
  // Relaunches a dead child; returns false while it is alive.
  bool ReviveIfDead() {
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, WNOHANG) != pid) return false;
    if (WIFEXITED(status) && IsNonRetryableExit(WEXITSTATUS(status))) {
      std::fprintf(stderr,
                   "\nmoerun local: %s (pid %d) exited with code %d, which a relaunch "
                   "cannot fix; see %s\n",
                   name.c_str(), pid, WEXITSTATUS(status), log.c_str());
      fatal_exit = WEXITSTATUS(status);
      pid = -1;
      return false;
    }
    std::fprintf(stderr, "\nmoerun local: %s (pid %d) %s; relaunching it\n", name.c_str(), pid,
                 WIFSIGNALED(status)
                     ? ("was killed by signal " + std::to_string(WTERMSIG(status))).c_str()
                     : ("exited with code " + std::to_string(WEXITSTATUS(status))).c_str());
    ++relaunches;
    dead_since.reset();
    Launch();
    return true;
  }
  // A daemon whose process lives while the coordinator has counted it dead (its `workers`
  // entry in a status reply) for kLocalSilentDaemonMs is killed; ReviveIfDead relaunches it.
  void KillIfSilent(const nlohmann::json& workers) {
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
                 "\nmoerun local: %s (pid %d) runs but the coordinator has counted it dead for "
                 "%lld ms (frozen or cut off); killing it\n",
                 name.c_str(), pid, (long long)relaunch_dead_after_ms);
    kill(pid, SIGKILL);  // its trainers go with it (they die with their daemon)
    dead_since.reset();
  }
};

void Stop(pid_t pid) {
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

// Keys on first use: the coordinator's pair, one client pair for everyone, authorized_keys.
Status PrepareKeys(const std::string& coord_dir, const std::string& keys_dir) {
  std::error_code ec;
  fs::create_directories(coord_dir, ec);
  fs::create_directories(keys_dir, ec);
  if (ec) return Status::IOError("cannot create " + keys_dir + ": " + ec.message());
  if (!LoadCurveKeyPair(coord_dir, kCoordinatorKeyName).ok()) {
    auto k = GenerateCurveKeyPair();
    if (!k.ok()) return k.status();
    MOERUN_RETURN_IF_ERROR(SaveCurveKeyPair(coord_dir, kCoordinatorKeyName, k.value()));
  }
  auto client = LoadCurveKeyPair(keys_dir, kClientKeyName);
  if (!client.ok()) {
    client = GenerateCurveKeyPair();
    if (!client.ok()) return client.status();
    MOERUN_RETURN_IF_ERROR(SaveCurveKeyPair(keys_dir, kClientKeyName, client.value()));
  }
  fs::copy_file(coord_dir + "/coordinator.key", keys_dir + "/coordinator.key",
                fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::IOError("cannot copy the coordinator's key: " + ec.message());
  std::ofstream auth(coord_dir + "/authorized_keys", std::ios::trunc);
  auth << "# written by `moerun local`: the key of its CLI, daemons and trainers\n"
       << client->public_key << "\n";
  return auth ? Status::OK() : Status::IOError("cannot write authorized_keys in " + coord_dir);
}

std::string ReadEndpoint(const std::string& path) {
  std::ifstream in(path);
  std::string ep;
  in >> ep;
  return ep;
}

int RunLocal(const LocalArgs& a) {
  LoadedJobSpec loaded = LoadJobSpecFile(a.file);
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status gpu = trainer::TrainerSupport(loaded.spec); !gpu.ok()) {
    // Refused here rather than by every trainer after the job is placed.
    std::fprintf(stderr, "moerun %s: %s\n", "local", gpu.message().c_str());
    return kExitUnsupported;
  }
  const JobSpec& spec = loaded.spec;
  // What the coordinator would refuse at submit is refused here, before anything starts.
  if (a.steps > 0 && a.steps < spec.train.optimizer.warmup_steps) {
    std::fprintf(stderr,
                 "moerun local: --steps %lld is fewer than train.optimizer.warmup_steps (%lld) in "
                 "%s: train at least that many steps, or shorten the warm-up\n",
                 (long long)a.steps, (long long)spec.train.optimizer.warmup_steps, a.file.c_str());
    return kExitInvalidConfig;
  }
  const int64_t world = spec.parallel.world_size();
  const int64_t workers =
      std::clamp<int64_t>(a.workers > 0 ? a.workers : spec.resources.workers, 1, world);
  const int64_t slots = (world + workers - 1) / workers;
  const std::string run_dir =
      fs::absolute(a.run_dir.empty() ? "runs/" + spec.name : a.run_dir).lexically_normal().string();
  if (Status m = CheckRunDirModel(loaded, a.file, run_dir); !m.ok()) {
    std::fprintf(stderr, "%s\n", m.message().c_str());
    return kExitInvalidConfig;
  }
  const std::string control = run_dir + "/control";
  const std::string coord_dir = control + "/coordinator", keys_dir = control + "/keys";
  Status s = PrepareKeys(coord_dir, keys_dir);
  if (!s.ok()) {
    std::fprintf(stderr, "moerun local: %s\n", s.message().c_str());
    return kExitFailure;
  }
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  fs::remove(coord_dir + "/endpoint");
  fs::remove(coord_dir + "/http_endpoint");
  const auto& ft = spec.fault_tolerance;
  Child coord{
      "the coordinator",
      {(bin / "moerun-coordinator").string(), "--state-dir", coord_dir, "--bind",
       "tcp://127.0.0.1:*", "--heartbeat-interval-ms", std::to_string(ft.heartbeat_interval_ms),
       "--heartbeat-timeout-ms", std::to_string(ft.heartbeat_timeout_ms), "--http", "127.0.0.1:0"},
      control + "/coordinator.out"};
  if (a.insecure_data_plane) coord.args.push_back("--insecure-data-plane");
  coord.Launch();
  std::vector<Child> daemons;
  // The daemons' memory snapshots, under one root this command owns: a daemon it had to kill
  // (frozen at the end, say) cannot remove its own, so the root goes once all are stopped.
  const std::string memory_root = ShmDirFor("local-", control);
  auto shutdown = [&] {
    for (auto it = daemons.rbegin(); it != daemons.rend(); ++it) Stop(it->pid);
    Stop(coord.pid);
    std::error_code ec;
    fs::remove_all(memory_root, ec);
  };
  std::string endpoint;
  const auto start_deadline =
      SteadyClock::now() + std::chrono::milliseconds(kCoordinatorStartTimeoutMs);
  while ((endpoint = ReadEndpoint(coord_dir + "/endpoint")).empty()) {
    if (!Alive(coord.pid) || SteadyClock::now() > start_deadline) {
      std::fprintf(stderr, "moerun local: the coordinator did not start; see %s/coordinator.out\n",
                   control.c_str());
      Stop(coord.pid);
      return kExitFailure;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
  }
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
  std::ifstream in(a.file);
  std::stringstream text;
  text << in.rdbuf();
  auto submitted =
      client.value()->Request(MessageType::kSubmitJob, "",
                              {{"spec_yaml", text.str()},
                               {"source", a.file},
                               {"spec_dir", fs::absolute(a.file).parent_path().string()},
                               {"run_dir", run_dir},
                               {"steps", a.steps},
                               {"resume", true}},
                              kCliRequestTimeoutMs);
  if (!submitted.ok()) {
    std::fprintf(stderr, "moerun local: %s\n", submitted.status().message().c_str());
    shutdown();
    return kExitFailure;
  }
  const std::string job = submitted->value("job_id", "");
  std::fprintf(stderr, "moerun local: job %s submitted (%lld ranks), run dir %s\n", job.c_str(),
               (long long)world, run_dir.c_str());

  g_interrupted.store(false);
  auto old_int = std::signal(SIGINT, OnInterrupt);
  auto old_term = std::signal(SIGTERM, OnInterrupt);
  const bool tty = !a.no_progress && isatty(STDERR_FILENO);
  const auto t0 = SteadyClock::now();
  std::string phase, last_line;
  int64_t last_printed_step = -1;
  nlohmann::json detail;
  bool cancelled = false;
  auto last_answer = SteadyClock::now();
  for (;;) {
    if (g_interrupted.load() && !cancelled) {
      std::fprintf(stderr, "\nmoerun local: interrupted; cancelling %s\n", job.c_str());
      (void)client.value()->Request(MessageType::kCancelJob, job, nlohmann::json::object(),
                                    kCliRequestTimeoutMs);
      cancelled = true;
    }
    coord.ReviveIfDead();
    for (auto& d : daemons) d.ReviveIfDead();
    int fatal = coord.fatal_exit;
    for (const auto& d : daemons) fatal = fatal != 0 ? fatal : d.fatal_exit;
    if (fatal != 0) {
      std::signal(SIGINT, old_int);
      std::signal(SIGTERM, old_term);
      shutdown();
      return fatal;
    }
    // A short wait: a dead coordinator is noticed and relaunched within about a second.
    auto reply =
        client.value()->Request(MessageType::kQuery, job, {{"what", "job"}}, kLocalPollTimeoutMs);
    if (!reply.ok()) {
      // The coordinator may be restarting; it gets a while before we give up.
      if (SteadyClock::now() - last_answer > std::chrono::milliseconds(kLocalGiveUpMs)) {
        std::fprintf(stderr, "\nmoerun local: %s\n", reply.status().message().c_str());
        break;
      }
      continue;
    }
    last_answer = SteadyClock::now();
    detail = reply.value();
    auto cluster =
        client.value()->Request(MessageType::kQuery, "", {{"what", "status"}}, kLocalPollTimeoutMs);
    if (cluster.ok() && cluster->contains("workers")) {
      for (auto& d : daemons) d.KillIfSilent((*cluster)["workers"]);
    }
    const std::string now_phase = detail.value("phase", "");
    if (now_phase != phase) {
      if (tty && !phase.empty()) std::fprintf(stderr, "\n");
      std::fprintf(stderr, "moerun local: %s %s%s\n", job.c_str(), now_phase.c_str(),
                   detail.contains("last_event")
                       ? (": " + detail["last_event"].get<std::string>()).c_str()
                       : "");
      phase = now_phase;
    }
    if (phase == "SUCCEEDED" || phase == "FAILED" || phase == "CANCELLED") break;
    const int64_t step = detail.value("step", int64_t(0));
    const int64_t total = std::max<int64_t>(1, detail.value("total_steps", int64_t(1)));
    if (phase == "RUNNING" && step > 0) {
      if (tty) {
        const std::string line = FormatProgress(detail);
        std::fprintf(stderr, "\r%s   ", line.c_str());
      } else if (step * 10 / total != last_printed_step * 10 / total || last_printed_step < 0) {
        std::fprintf(stderr, "%s\n", FormatProgress(detail).c_str());
        last_printed_step = step;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kLocalPollMs));
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
  std::printf("job %s %s in %s: step %lld/%lld", job.c_str(), phase.c_str(),
              DurationText(wall).c_str(), (long long)detail.value("step", int64_t(0)),
              (long long)detail.value("total_steps", int64_t(0)));
  if (detail.contains("loss") && detail["loss"].is_number())
    std::printf(", loss %.4f", detail["loss"].get<double>());
  if (detail.contains("val_loss") && detail["val_loss"].is_number())
    std::printf(", held-out %.4f", detail["val_loss"].get<double>());
  if (detail.contains("tokens_per_s") && detail["tokens_per_s"].is_number())
    std::printf(", %.0f tokens/s", detail["tokens_per_s"].get<double>());
  std::printf("; %lld restart(s)\nrun dir %s (metrics.jsonl, checkpoints/, control/)\n",
              (long long)detail.value("restarts", int64_t(0)), run_dir.c_str());
  if (phase == "SUCCEEDED") return kExitOk;
  if (phase == "CANCELLED") return cancelled ? 130 : kExitFailure;
  std::fprintf(stderr,
               "moerun local: %s\n  coordinator log: %s/coordinator.log\n  trainer logs: "
               "%s/worker-*/logs/%s/rank-*.log\n",
               detail.value("last_event", std::string("the job failed")).c_str(), coord_dir.c_str(),
               control.c_str(), job.c_str());
  return kExitFailure;
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
