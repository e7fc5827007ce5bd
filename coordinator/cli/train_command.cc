// moerun train JOB.yaml --run-dir DIR [--steps N] [--resume] [--no-progress] [--profile-ops]
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/run_dir.h"
#include "kernels/cpu/op_profile.h"
#include "worker/trainer/daemon_watch.h"
#include "worker/trainer/gpu_stage.h"
#include "worker/trainer/trainer.h"

namespace moerun::cli {
namespace {

namespace fs = std::filesystem;

struct TrainArgs {
  std::string file;
  trainer::TrainOptions opts;
  bool no_progress = false;
  bool profile_ops = false;
  std::string endpoints;  // comma-separated, one per rank (set by `moerun launch`)
  // Set by a worker daemon: the job generation this trainer belongs to.
  trainer::ControlChannelOptions control;
  std::string spec_dir;
  // Set by a worker daemon: the beat file shared with it and how stale its beat may get.
  std::string daemon_beat;
  int64_t daemon_lease_ms = 0;
};

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

std::vector<std::string>& Args() {
  static std::vector<std::string> args;
  return args;
}

// A cuda job in a process without the GPU step: become moerun-train-gpu (next to this
// program) with the same arguments. Returns only when there is no such program (a build
// without CUDA); the trainer then refuses the job by name.
void HandToGpuTrainer() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec || Args().empty()) return;
  const std::string gpu = (self.parent_path() / "moerun-train-gpu").string();
  if (access(gpu.c_str(), X_OK) != 0) return;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(gpu.c_str()));
  for (size_t i = 1; i < Args().size(); ++i) argv.push_back(Args()[i].data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  execv(gpu.c_str(), argv.data());
  std::fprintf(stderr, "moerun train: cannot start %s: %s\n", gpu.c_str(), std::strerror(errno));
}

// The run's CPU time by operation (kernels/cpu/op_profile.h), as <run dir>/op_profile.json and
// one line on stdout, largest first.
void ReportOpProfile(const std::string& run_dir, int rank) {
  const auto totals = kernels::cpu::OpProfileTotals();
  std::vector<std::pair<double, std::string>> order;
  nlohmann::json ops = nlohmann::json::object();
  for (size_t i = 0; i < totals.size(); ++i) {
    if (totals[i].calls == 0) continue;
    const std::string name = kernels::cpu::OpName(static_cast<kernels::cpu::Op>(i));
    ops[name] = {{"seconds", totals[i].seconds}, {"calls", totals[i].calls}};
    order.emplace_back(totals[i].seconds, name);
  }
  std::sort(order.rbegin(), order.rend());
  const std::string path =
      run_dir + (rank == 0 ? "/op_profile.json" : "/op_profile." + std::to_string(rank) + ".json");
  std::ofstream(path) << nlohmann::json{{"version", 1}, {"ops", ops}}.dump(1) << "\n";
  std::string line = "CPU time by operation (" + path + "):";
  for (const auto& [seconds, name] : order) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s %.2fs", name.c_str(), seconds);
    line += buf;
  }
  std::printf("%s\n", line.c_str());
}

// Fault injection for drills and tests, each "rank=R,KEY=V[,generation=G]" in an environment
// variable, for rank R (of generation G when given, of a daemon-started job):
//   MOERUN_FAULT_STALL=rank=R,step=S  it hangs at the start of step S
//                                     (TrainOptions::injected_stall_step)
//   MOERUN_FAULT_SLOW=rank=R,ms=M     every step computes M ms longer, a straggler
//                                     (TrainOptions::injected_slow_ms); gemm_ms=G makes
//                                     each pre-flight GEMM G ms longer (injected_gemm_ms)
// The value of KEY for this rank; 0 when the variable is unset or names another rank.
int64_t InjectedFault(const char* variable, const char* key, int rank, uint64_t generation) {
  const char* env = std::getenv(variable);
  if (env == nullptr) return 0;
  int64_t want_rank = -1, value = 0, want_generation = 0;
  for (const std::string& part : SplitCommas(env)) {
    const size_t eq = part.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = part.substr(0, eq);
    const int64_t v = std::atoll(part.c_str() + eq + 1);
    if (k == "rank") want_rank = v;
    if (k == key) value = v;
    if (k == "generation") want_generation = v;
  }
  if (want_rank != rank || (want_generation > 0 && uint64_t(want_generation) != generation))
    return 0;
  return value;
}

int RunTrain(TrainArgs& a) {
  LoadedJobSpec loaded = LoadJobSpecFile(a.file, a.spec_dir);
  // Before any output: the GPU trainer reports on the spec itself.
  if (loaded.ok() && loaded.spec.resources.backend == Backend::kCuda &&
      trainer::LinkedGpuStep().make == nullptr) {
    HandToGpuTrainer();
  }
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status s = CheckRunDirModel(loaded, a.file, a.opts.run_dir); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return kExitInvalidConfig;
  }
  std::ifstream in(a.file);
  std::stringstream text;
  text << in.rdbuf();
  a.opts.progress = !a.no_progress;
  a.opts.injected_stall_step =
      InjectedFault("MOERUN_FAULT_STALL", "step", a.opts.rank, a.control.generation);
  a.opts.injected_slow_ms =
      InjectedFault("MOERUN_FAULT_SLOW", "ms", a.opts.rank, a.control.generation);
  a.opts.injected_gemm_ms =
      InjectedFault("MOERUN_FAULT_SLOW", "gemm_ms", a.opts.rank, a.control.generation);
  a.opts.preflight = loaded.spec.fault_tolerance.preflight && !a.control.address.empty() &&
                     a.control.generation == 1;
  std::unique_ptr<trainer::ControlChannel> channel;
  if (!a.control.address.empty()) {
    if (a.control.job_id.empty() || a.control.generation == 0 || a.control.keys_dir.empty()) {
      std::fprintf(stderr, "moerun train: --coordinator needs --keys, --job and --generation\n");
      return kExitInvalidConfig;
    }
    a.control.rank = a.opts.rank;
    auto c = trainer::ControlChannel::Connect(a.control);
    if (!c.ok()) {
      std::fprintf(stderr, "moerun train: %s\n", c.status().message().c_str());
      return kExitInvalidConfig;
    }
    channel = std::move(c.value());
    a.opts.control = channel.get();
  } else if (a.opts.world > 1) {
    a.opts.endpoints = SplitCommas(a.endpoints);
    if (int(a.opts.endpoints.size()) != a.opts.world || a.opts.rank < 0 ||
        a.opts.rank >= a.opts.world) {
      std::fprintf(stderr, "moerun train: --rank/--world/--endpoints do not fit together\n");
      return kExitInvalidConfig;
    }
  }
  std::unique_ptr<trainer::DaemonWatch> watch;
  if (!a.daemon_beat.empty()) {
    auto w = trainer::DaemonWatch::Start(a.daemon_beat, a.daemon_lease_ms);
    if (!w.ok()) {
      std::fprintf(stderr, "moerun train: %s\n", w.status().message().c_str());
      return kExitFailure;
    }
    watch = std::move(w.value());
  }
  int code = kExitFailure;
  kernels::cpu::SetOpProfiling(a.profile_ops);
  auto summary = trainer::Train(loaded.spec, text.str(), a.opts, &code);
  if (a.profile_ops) ReportOpProfile(a.opts.run_dir, a.opts.rank);
  if (!summary.ok()) {
    // With its code ("TimedOut: step 12: expert dispatch: ..."): the daemon passes this line
    // on as the job's event cause.
    std::fprintf(stderr, "moerun train: %s\n", summary.status().ToString().c_str());
    return code;
  }
  if (a.opts.rank != 0) return kExitOk;  // rank 0 speaks for the run
  if (summary->first_step > summary->last_step) {
    std::printf("nothing to train: the run in %s is complete at step %lld\n",
                a.opts.run_dir.c_str(), (long long)summary->last_step);
    return kExitOk;
  }
  std::printf("trained steps %lld-%lld: loss %.4f", (long long)summary->first_step,
              (long long)summary->last_step, summary->final_loss);
  if (summary->final_val_loss >= 0) std::printf(", held-out loss %.4f", summary->final_val_loss);
  std::printf(", %.0f tokens/s; run dir %s\n", summary->tokens_per_s, a.opts.run_dir.c_str());
  return kExitOk;
}

}  // namespace

void RememberArgs(int argc, char** argv) { Args().assign(argv, argv + argc); }

void AddTrainCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a job in this one process (world size 1)");
  cmd->add_option("file", a->file, "job spec YAML file")->required();
  cmd->add_option("--run-dir", a->opts.run_dir,
                  "directory for metrics.jsonl, train.log, checkpoints")
      ->required();
  cmd->add_option("--steps", a->opts.steps, "train this many steps instead of train.steps")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--resume", a->opts.resume, "continue from the newest readable checkpoint");
  cmd->add_flag("--no-progress", a->no_progress, "no progress bar, even on a terminal");
  cmd->add_flag("--profile-ops", a->profile_ops,
                "time the CPU kernels by operation; writes op_profile.json in the run dir");
  // Set by `moerun launch` for each rank of a parallel run.
  cmd->add_option("--rank", a->opts.rank, "this process's rank in a parallel run")->group("");
  cmd->add_option("--world", a->opts.world, "ranks in a parallel run")->group("");
  cmd->add_option("--endpoints", a->endpoints, "data-plane address of every rank")->group("");
  cmd->add_option("--device", a->opts.device,
                  "CUDA device for resources.backend: cuda (default: rank mod the visible GPUs)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--data-plane-timeout-ms", a->opts.data_plane_timeout_ms,
                  "a data-plane call waiting longer than this fails the rank")
      ->capture_default_str();
  // Set by a worker daemon for the trainers of a submitted job.
  cmd->add_option("--coordinator", a->control.address, "report to this coordinator")->group("");
  cmd->add_option("--keys", a->control.keys_dir, "client key directory")->group("");
  cmd->add_option("--job", a->control.job_id, "job id")->group("");
  cmd->add_option("--generation", a->control.generation, "job generation")->group("");
  cmd->add_option("--data-host", a->opts.data_host, "bind the data plane here")->group("");
  cmd->add_option("--spec-dir", a->spec_dir, "resolve relative data paths here")->group("");
  cmd->add_option("--restore-step", a->opts.restore_step, "restore exactly this step")->group("");
  cmd->add_option("--daemon-beat", a->daemon_beat, "beat file shared with the daemon")->group("");
  cmd->add_option("--memory-dir", a->opts.memory_dir, "memory snapshots here (tmpfs)")->group("");
  cmd->add_flag("--restore-from-memory", a->opts.restore_from_memory,
                "read --restore-step from --memory-dir")
      ->group("");
  cmd->add_option("--replica-to", a->opts.replica_to, "copy pinned snapshots to this rank")
      ->group("");
  cmd->add_option("--replica-from", a->opts.replica_from, "keep this rank's pinned copies")
      ->group("");
  cmd->add_option("--fetch-replica-from", a->opts.fetch_replica_from,
                  "restore from this rank's copy of this rank's state")
      ->group("");
  cmd->add_option("--serve-replicas", a->opts.serve_replicas,
                  "send these ranks their copies on a restore")
      ->delimiter(',')
      ->group("");
  cmd->add_option("--data-plane-key", a->opts.data_plane_key_file,
                  "the generation's data-plane key pair (read, then removed)")
      ->group("");
  cmd->add_option("--flight-recorder", a->opts.flight_recorder,
                  "record data-plane calls in this file")
      ->group("");
  cmd->add_option("--daemon-lease-ms", a->daemon_lease_ms, "fence after the daemon is silent")
      ->group("");
  cmd->callback([a, exit_code] { *exit_code = RunTrain(*a); });
}

}  // namespace moerun::cli
