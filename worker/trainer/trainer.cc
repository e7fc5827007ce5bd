#include "worker/trainer/trainer.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <sstream>

#include "common/exit_codes.h"
#include "common/limits.h"
#include "common/timeouts.h"
#include "common/writable_dir.h"
#include "kernels/cpu/gemm.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/comm/solo_communicator.h"
#include "worker/comm/timed_communicator.h"
#include "worker/comm/zmq_communicator.h"
#include "worker/data/corpus.h"
#include "worker/trainer/cpu_stage.h"
#include "worker/trainer/gpu_stage.h"
#include "worker/trainer/memory_keeper.h"
#include "worker/trainer/preflight.h"
#include "worker/trainer/startup_account.h"
#include "worker/trainer/step_driver.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_report.h"
#include "worker/trainer/train_restore.h"
#include "worker/trainer/train_state.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::trainer {
namespace {

namespace fs = std::filesystem;
namespace cpu = kernels::cpu;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop.store(true); }

// SIGINT and SIGTERM ask the loop to stop after a checkpoint, for as long as this lives.
class StopSignals {
 public:
  StopSignals() {
    g_stop.store(false);
    old_int_ = std::signal(SIGINT, OnStopSignal);
    old_term_ = std::signal(SIGTERM, OnStopSignal);
  }
  ~StopSignals() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }
  static bool requested() { return g_stop.load(); }

 private:
  void (*old_int_)(int) = nullptr;
  void (*old_term_)(int) = nullptr;
};

Result<std::shared_ptr<spdlog::logger>> MakeLogger(const std::string& path, bool to_stderr) {
  std::vector<spdlog::sink_ptr> sinks;
  try {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(path));
  } catch (const spdlog::spdlog_ex& e) {
    return Status::DataLoss("log file " + path + ": " + e.what());
  }
  if (to_stderr) sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto log = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  log->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  log->flush_on(spdlog::level::info);
  return log;
}

// Phase 1: the job as this run trains it (--steps applied), refused by name when this
// trainer or machine cannot run it: InvalidArgument or Unimplemented (never retried).
Result<JobSpec> CheckJob(const JobSpec& job, const TrainOptions& opts) {
  JobSpec spec = job;
  if (opts.steps > 0) {
    if (opts.steps < spec.train.optimizer.warmup_steps) {
      return Status::InvalidArgument("--steps " + std::to_string(opts.steps) +
                                     " is below train.optimizer.warmup_steps (" +
                                     std::to_string(spec.train.optimizer.warmup_steps) + ")");
    }
    spec.train.steps = opts.steps;
  }
  MOERUN_RETURN_IF_ERROR(TrainerSupport(spec));
  if (spec.resources.backend != Backend::kCuda) return spec;
  // Never train on the CPU behind a job that asked for GPUs.
  const GpuStepHooks& gpu_step = LinkedGpuStep();
  if (gpu_step.check == nullptr) {
    return Status::Unimplemented(
        "resources.backend: cuda: this build has no CUDA (configure with -DMOERUN_CUDA=ON where "
        "the CUDA toolkit is installed), or use backend: cpu");
  }
  MOERUN_RETURN_IF_ERROR(gpu_step.check(spec));
  return spec;
}

// The daemon's key file (public key, then secret key, Z85, one per line), removed once read:
// the secret then lives in this process only.
Result<comm::DataPlaneKey> ReadDataPlaneKey(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::IOError("data-plane key file " + path + " cannot be read");
  comm::DataPlaneKey key;
  std::getline(in, key.public_key);
  std::getline(in, key.secret_key);
  if (key.public_key.size() != 40 || key.secret_key.size() != 40) {
    return Status::InvalidArgument("data-plane key file " + path +
                                   " does not hold a CURVE key pair (Z85 public and secret keys, "
                                   "one per line)");
  }
  std::error_code ec;
  fs::remove(path, ec);
  return key;
}

// Phase 2: the world communicator. Under a daemon: bind first, tell the coordinator where,
// and learn where everyone else listens; else the endpoints given.
Result<std::unique_ptr<comm::Communicator>> ConnectWorld(const TrainOptions& opts,
                                                         spdlog::logger& log) {
  if (opts.control == nullptr) {
    if (opts.world == 1) return std::unique_ptr<comm::Communicator>(new comm::SoloCommunicator());
    auto z = comm::ZmqCommunicator::Create(opts.rank, opts.endpoints, opts.data_plane_timeout_ms);
    if (!z.ok()) return z.status();
    return std::unique_ptr<comm::Communicator>(std::move(z.value()));
  }
  std::shared_ptr<comm::ZmqTransport> transport;
  std::string endpoint;
  if (opts.world > 1) {
    std::optional<comm::DataPlaneKey> key;
    if (!opts.data_plane_key_file.empty()) {
      auto k = ReadDataPlaneKey(opts.data_plane_key_file);
      if (!k.ok()) return k.status();
      key = std::move(k.value());
    }
    std::vector<std::string> endpoints(size_t(opts.world));
    endpoints[size_t(opts.rank)] = "tcp://" + opts.data_host + ":*";
    auto t = comm::ZmqTransport::Create(opts.rank, endpoints, std::move(key));
    if (!t.ok()) return t.status();
    transport = t.value();
    endpoint = transport->local_endpoint();
    // Whoever knocks without the generation's key is refused by libzmq; say who.
    transport->OnRefused([&log](const std::string& address, const std::string& peer_key) {
      log.warn(
          "data plane: refused a connection from {} (key {}): it does not hold this "
          "generation's data-plane key",
          address, peer_key);
    });
  }
  auto table = opts.control->Rendezvous(endpoint, kRendezvousTimeoutMs);
  if (!table.ok()) return table.status();
  log.info("rendezvous: {} ranks, this one at {}", table->size(),
           endpoint.empty() ? "(no data plane)" : endpoint);
  if (int(table->size()) != opts.world) {
    return Status::Internal("rendezvous table of " + std::to_string(table->size()) +
                            " ranks for a world of " + std::to_string(opts.world));
  }
  if (opts.world == 1) return std::unique_ptr<comm::Communicator>(new comm::SoloCommunicator());
  MOERUN_RETURN_IF_ERROR(transport->SetEndpoints(table.value()));
  transport->ConnectPeers();
  return std::unique_ptr<comm::Communicator>(
      comm::ZmqCommunicator::Create(transport, opts.data_plane_timeout_ms));
}

// Phase 4: the step driver over this rank's backend, from the initialized or restored state.
Result<std::unique_ptr<StepDriver>> MakeDriver(const JobSpec& spec, const TrainOptions& opts,
                                               Topology* topo, TrainState* state,
                                               const data::Corpus* corpus,
                                               std::shared_ptr<comm::DataPlaneWait> wait) {
  std::unique_ptr<StageBackend> backend;
  if (spec.resources.backend == Backend::kCuda) {
    GpuStepOptions gpu_opts{opts.device, opts.data_plane_timeout_ms, std::move(wait)};
    auto b = LinkedGpuStep().make(spec, topo, &state->params, &state->opt, gpu_opts);
    if (!b.ok()) return b.status();
    backend = std::move(b.value());
  } else {
    backend = std::make_unique<CpuStage>(spec, topo, &state->params, &state->opt);
  }
  return std::make_unique<StepDriver>(spec, topo, corpus, std::move(backend));
}

// Everything a rank's run holds between its phases.
struct RankRun {
  RankRun(JobSpec s, const TrainOptions& o) : spec(std::move(s)), opts(o) {}
  JobSpec spec;
  const TrainOptions& opts;
  std::shared_ptr<spdlog::logger> log;
  bool tty = false;
  std::shared_ptr<comm::DataPlaneWait> wait = std::make_shared<comm::DataPlaneWait>();
  std::optional<Topology> topo;
  std::optional<data::Corpus> corpus;
  std::optional<TrainState> state;
  std::unique_ptr<checkpoint::ShardStore> store;  // null unless this rank writes a shard
  // The store while it opens beside a restore from memory, which reads no shard.
  std::future<Result<std::unique_ptr<checkpoint::ShardStore>>> store_opening;
  std::unique_ptr<StepDriver> driver;
  std::unique_ptr<MemoryKeeper> memory;  // null unless a daemon asked for snapshots
  StartupAccount startup;
};

// Phase 0: the run directory, the job's YAML in it, this rank's log.
Status OpenRunDir(RankRun& run, const std::string& spec_yaml) {
  const TrainOptions& opts = run.opts;
  const bool lead = opts.rank == 0;  // writes metrics and the main log
  std::error_code ec;
  fs::create_directories(opts.run_dir, ec);
  if (ec) {
    return Status::DataLoss("run dir " + opts.run_dir + " cannot be created (" + ec.message() +
                            "): fix its parent's permissions, or choose another");
  }
  MOERUN_RETURN_IF_ERROR(CheckWritableDir(opts.run_dir, "run dir"));
  if (lead) std::ofstream(opts.run_dir + "/job.yaml") << spec_yaml;
  run.tty = lead && opts.progress && isatty(STDERR_FILENO);
  auto log = MakeLogger(
      opts.run_dir + (lead ? "/train.log" : "/train-rank-" + std::to_string(opts.rank) + ".log"),
      (lead && !run.tty) || opts.control != nullptr);  // a daemon keeps every rank's stderr
  if (!log.ok()) return log.status();
  run.log = std::move(log.value());
  cpu::SetBlasThreads(int(run.spec.resources.threads_per_trainer));
  return Status::OK();
}

// Phases 2 and 3: the world and its groups, the data, the model state to start from.
Status Bootstrap(RankRun& run) {
  run.startup.Mark("log");
  auto world = ConnectWorld(run.opts, *run.log);
  if (!world.ok()) return world.status();
  run.startup.Mark("rendezvous");
  // Every communicator of the topology is split from this one, so all add to `wait` and
  // record into the same flight recorder.
  std::shared_ptr<comm::FlightRecorder> recorder;
  if (!run.opts.flight_recorder.empty()) {
    auto r = comm::FlightRecorder::Create(run.opts.flight_recorder, run.opts.rank);
    if (!r.ok()) return r.status();
    recorder = std::move(r.value());
  }
  auto topo = MakeTopology(run.spec, std::make_unique<comm::TimedCommunicator>(
                                         std::move(world.value()), run.wait, SystemClock::Default(),
                                         std::move(recorder)));
  if (!topo.ok()) return topo.status();
  run.topo.emplace(std::move(topo.value()));
  run.startup.Mark("groups");
  const Topology& t = *run.topo;
  if (run.opts.preflight && t.world > 1) {
    const PreflightResult pf = RunPreflight(*t.world_comm, run.opts.injected_gemm_ms);
    run.startup.Mark("pre-flight");
    run.log->info("pre-flight: {}", pf.ToJson().dump());
    if (run.opts.control) run.opts.control->ReportPreflight(pf.ToJson());
  }
  const ModelSpec& m = run.spec.model;
  auto corpus = data::Corpus::Load(run.spec.data, m.vocab_size, m.seq_len);
  if (!corpus.ok()) return Status::DataLoss("data: " + corpus.status().message());
  run.corpus.emplace(std::move(corpus.value()));
  run.startup.Mark("data");
  run.log->info(
      "job {} rank {}/{}: stage {} (layers {}-{}), replica {}, experts {}-{}; {} data files, {} "
      "tokens",
      run.spec.name, t.rank, t.world, t.stage, t.range.layer_begin, t.range.layer_end - 1, t.d,
      t.range.expert_begin, t.range.expert_end - 1, run.corpus->files().size(),
      run.corpus->tokens());
  // A restart restores every weight of the committed step (or fails): no initialization first.
  run.state.emplace(run.spec, t.range, /*initialize=*/run.opts.restore_step <= 0);
  run.startup.Mark("state");
  if (run.opts.restore_from_memory && run.opts.restore_step > 0) {
    // Nobody reads a shard: RocksDB opens it while the restore runs (the step loop waits for
    // it before the first step, which may write a checkpoint).
    run.store_opening = std::async(std::launch::async, [&run] {
      auto store = OpenShardStore(run.spec, run.opts, *run.topo);
      if (store.ok() && store.value()) {
        Status allowed = store.value()->AllowCompaction();
        if (!allowed.ok()) return Result<std::unique_ptr<checkpoint::ShardStore>>(allowed);
      }
      return store;
    });
  } else {
    auto store = OpenShardStore(run.spec, run.opts, t);
    if (!store.ok()) return store.status();
    run.store = std::move(store.value());
    if (run.store && !run.store->damage().empty()) run.log->warn("{}", run.store->damage());
    run.startup.Mark("shard store");
  }
  Status restored =
      RestoreOrResume(run.spec, run.opts, *run.topo, run.store.get(), &run.state.value(), *run.log);
  run.startup.Mark("restore");
  return restored;
}

// One step of the loop: train, evaluate when due, report, agree on stopping, checkpoint when
// due or stopping. Cancelled once a stop was asked for and its checkpoint submitted.
Status OneStep(RankRun& run, TrainReporter& report, checkpoint::CheckpointWriter* writer,
               TrainSummary* summary) {
  const JobSpec& spec = run.spec;
  const int64_t total = spec.train.steps, step = run.state->step + 1;
  const auto t0 = Clock::now();
  const comm::DataPlaneWait wait0 = *run.wait;
  run.state->step = step;
  if (step == run.opts.injected_stall_step) {
    run.log->warn("MOERUN_FAULT_STALL: rank {} stops at step {} for good (an injected hang)",
                  run.opts.rank, step);
    run.log->flush();
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  auto r = run.driver->Run(step, total);
  if (!r.ok()) return r.status().WithContext("step " + std::to_string(step));
  if (run.opts.injected_slow_ms > 0)  // counted as compute: outside every data-plane wait
    std::this_thread::sleep_for(std::chrono::milliseconds(run.opts.injected_slow_ms));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json line = StepLine(spec, step, r.value(), seconds, run.wait->Since(wait0));
  const bool eval_now =
      spec.train.eval_interval > 0 && (step % spec.train.eval_interval == 0 || step == total);
  if (eval_now && run.corpus->validation_windows() > 0) {
    const int64_t windows = std::min(kEvalMaxWindows, run.corpus->validation_windows());
    auto val = run.driver->Evaluate(windows);
    if (!val.ok()) return val.status().WithContext("evaluation at step " + std::to_string(step));
    line["val_loss"] = val.value();
    summary->final_val_loss = val.value();
    run.log->info("step {} held-out loss {:.4f} over {} windows", step, val.value(), windows);
  }
  if (run.memory) {
    report.set_memory_held(run.memory->Held());
    report.set_replica_held(run.memory->ReplicaHeld());
  }
  report.Step(line, total);
  if (step == summary->first_step) {
    run.startup.Mark("first step");
    run.log->info("{}", run.startup.Describe());
  }
  summary->final_loss = r->loss;
  // SIGINT/SIGTERM, or the coordinator's StopJob heard at an earlier step's poll: every rank
  // stops after this step, with its checkpoint, if any rank was asked.
  auto stopping = run.driver->AnyRank(StopSignals::requested() || report.StopRequested());
  if (!stopping.ok()) return stopping.status();
  const bool ckpt_now = spec.checkpoint.interval_steps > 0 &&
                        (step % spec.checkpoint.interval_steps == 0 || step == total);
  bool host_synced = false;
  if (writer && (ckpt_now || stopping.value())) {
    host_synced = true;
    Status synced = run.driver->SyncHost();
    if (!synced.ok()) return synced.WithContext("checkpoint step " + std::to_string(step));
    const TrainState& st = *run.state;
    writer->Submit(step, SnapshotState(st.params, st.opt, step, spec.train.seed, st.model));
  }
  if (run.memory && run.memory->Due(step, total)) {
    Status synced = host_synced ? Status::OK() : run.driver->SyncHost();
    if (!synced.ok()) return synced.WithContext("memory snapshot step " + std::to_string(step));
    MOERUN_RETURN_IF_ERROR(
        run.memory->AfterStep(step, total, *run.state, *run.topo->world_comm, *run.log));
  }
  MOERUN_RETURN_IF_ERROR(report.ReportShards());
  // Every rank drains what the coordinator sent; a writer deletes what its commits let go.
  if (auto committed = report.PollCommitted(); committed && writer)
    writer->SetCommitted(std::move(*committed));
  if (stopping.value()) {
    return Status::Cancelled("interrupted after step " + std::to_string(step) +
                             "; a checkpoint was written: continue with --resume");
  }
  return Status::OK();
}

// A writer rank that finished: its last step commits once every writer has reported it, and
// only then may the steps it supersedes go. Waits up to kLastCommitWaitMs; past that (the
// coordinator away, a peer gone) they stay on disk, which loses nothing.
void AwaitLastCommit(TrainReporter& report, checkpoint::CheckpointWriter& writer, int64_t step) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(kLastCommitWaitMs);
  while (Clock::now() < deadline) {
    auto committed = report.PollCommitted();
    if (committed) writer.SetCommitted(*committed);
    if (committed && committed->back() >= step) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(kControlPollMs));
  }
  writer.Wait();
}

// Phase 5: steps until the last one, a failure, or a stop asked for on any rank.
Result<TrainSummary> StepLoop(RankRun& run) {
  const JobSpec& spec = run.spec;
  const int64_t total = spec.train.steps;
  TrainState& state = *run.state;
  TrainSummary summary;
  summary.first_step = state.step + 1;
  TrainReporter report(spec, run.opts, run.log, run.tty);
  MOERUN_RETURN_IF_ERROR(report.Open(state.step, summary.first_step));
  if (run.store_opening.valid()) {
    auto store = run.store_opening.get();
    if (!store.ok()) return store.status();
    run.store = std::move(store.value());
    if (run.store && !run.store->damage().empty()) run.log->warn("{}", run.store->damage());
    run.startup.Mark("shard store");
  }
  std::unique_ptr<checkpoint::CheckpointWriter> writer;
  if (run.store) {
    const std::string shard = run.topo->ShardName();
    // Under a coordinator, its commits decide which steps go (checkpoint_writer.h).
    const auto retention =
        run.opts.control ? checkpoint::Retention::kCommitted : checkpoint::Retention::kNewest;
    writer = std::make_unique<checkpoint::CheckpointWriter>(
        run.store.get(), spec.checkpoint.keep, spec.checkpoint.async, retention,
        [&report, shard](const checkpoint::WriteReport& r) { report.ShardWritten(r, shard); });
  }
  auto memory = MemoryKeeper::Open(spec, run.opts);
  if (!memory.ok()) return memory.status();
  run.memory = std::move(memory.value());
  StopSignals signals;
  const auto run_start = Clock::now();
  Status result;
  while (result.ok() && state.step < total) result = OneStep(run, report, writer.get(), &summary);
  if (writer) writer->Wait();
  if (run.memory) {
    run.memory->LogSummary(*run.log);
    // Kept when this rank is done: the job's last step is committed only once every rank has
    // written it, and a rank that did not (its daemon froze) restarts from these. The daemon
    // removes the job's snapshots when the coordinator ends the job.
  }
  if (Status w = report.ReportShards(); result.ok() && !w.ok()) result = w;
  report.Finish();
  summary.last_step = state.step;
  const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
  const int64_t tokens =
      (state.step - summary.first_step + 1) * spec.train.global_batch * spec.model.seq_len;
  summary.tokens_per_s = elapsed > 0 ? double(tokens) / elapsed : 0;
  if (!result.ok()) return result;
  if (writer && run.opts.control) AwaitLastCommit(report, *writer, state.step);
  return summary;
}

// Phase 6: a failed run's outcome. A broken data plane must not wait for peers that are
// gone; an error while stopping on request is the stop.
Status FailedRun(RankRun& run, Status failure) {
  if (StopSignals::requested() && failure.code() == Status::Code::kAborted)
    failure = Status::Cancelled(failure.message());
  run.log->error("{}", failure.message());
  if (run.topo) run.topo->world_comm->Abort(failure.message());
  if (run.driver) run.driver->Abort(failure.message());
  return failure;
}

Result<TrainSummary> TrainRank(const JobSpec& job, const std::string& spec_yaml,
                               const TrainOptions& opts) {
  auto spec = CheckJob(job, opts);
  if (!spec.ok()) return spec.status();
  RankRun run{std::move(spec.value()), opts};
  MOERUN_RETURN_IF_ERROR(OpenRunDir(run, spec_yaml));
  Status booted = Bootstrap(run);
  if (!booted.ok()) return booted;
  auto driver = MakeDriver(run.spec, opts, &*run.topo, &*run.state, &*run.corpus, run.wait);
  if (!driver.ok()) return driver.status();
  run.driver = std::move(driver.value());
  run.startup.Mark("backend");
  run.log->info("steps run on {}", run.driver->Describe());
  auto summary = StepLoop(run);
  if (!summary.ok()) return FailedRun(run, summary.status());
  run.log->info("done: step {} loss {:.4f} held-out {:.4f}, {:.0f} tok/s", summary->last_step,
                summary->final_loss, summary->final_val_loss, summary->tokens_per_s);
  return summary;
}

}  // namespace

int64_t LastMetricsStep(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  auto j = nlohmann::json::parse(last, nullptr, false);
  return j.is_object() ? j.value("step", int64_t(0)) : 0;
}

std::string CheckpointDir(const JobSpec& spec, const std::string& run_dir) {
  return spec.checkpoint.dir.empty() ? run_dir + "/checkpoints" : spec.checkpoint.dir;
}

double LearningRate(const OptimizerSpec& o, int64_t step, int64_t total) {
  if (o.warmup_steps > 0 && step <= o.warmup_steps)
    return o.lr * double(step) / double(o.warmup_steps);
  const int64_t span = total - o.warmup_steps;
  if (span <= 0) return o.lr;
  const double progress = std::min(1.0, double(step - o.warmup_steps) / double(span));
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

Result<TrainSummary> Train(const JobSpec& job, const std::string& spec_yaml,
                           const TrainOptions& opts, int* exit_code) {
  auto summary = TrainRank(job, spec_yaml, opts);
  *exit_code = ExitCodeFor(summary.status());
  return summary;
}

}  // namespace moerun::trainer
