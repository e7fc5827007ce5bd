#include "worker/trainer/trainer.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>

#include "common/control_timeouts.h"
#include "common/duration_text.h"
#include "common/exit_codes.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/optimizer.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/comm/solo_communicator.h"
#include "worker/comm/timed_communicator.h"
#include "worker/comm/zmq_communicator.h"
#include "worker/data/corpus.h"
#include "worker/model/model_stage.h"
#include "worker/trainer/gpu_step_runner.h"
#include "worker/trainer/step_runner.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::trainer {
namespace {

namespace fs = std::filesystem;
namespace cpu = kernels::cpu;
using Clock = std::chrono::steady_clock;

constexpr int64_t kEvalMaxWindows = 32;  // held-out windows per evaluation during training

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop.store(true); }

std::shared_ptr<spdlog::logger> MakeLogger(const std::string& path, bool to_stderr) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(path));
  if (to_stderr) sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto log = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  log->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  log->flush_on(spdlog::level::info);
  return log;
}

// Keeps the metrics of steps up to `last_step` (a resumed run rewrites what came after).
Status TruncateMetrics(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return Status::OK();
  std::string line, kept;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t(0)) <= last_step) kept += line + "\n";
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  return out.good() ? Status::OK() : Status::IOError("cannot rewrite " + path);
}

void DrawProgress(int64_t step, int64_t total, double loss, double tps, double eta_s) {
  constexpr int kWidth = 30;
  const int filled = int(double(kWidth) * double(step) / double(total));
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s   ", bar.c_str(),
               (long long)step, (long long)total, loss, tps, DurationText(eta_s).c_str());
  std::fflush(stderr);
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
  JobSpec spec = job;
  *exit_code = kExitInvalidConfig;
  if (opts.steps > 0) {
    if (opts.steps < spec.train.optimizer.warmup_steps) {
      return Status::InvalidArgument("--steps " + std::to_string(opts.steps) +
                                     " is below train.optimizer.warmup_steps (" +
                                     std::to_string(spec.train.optimizer.warmup_steps) + ")");
    }
    spec.train.steps = opts.steps;
  }
  if (Status support = TrainerSupport(spec); !support.ok()) {
    *exit_code = kExitUnsupported;
    return support;
  }
  const bool on_gpu = spec.resources.backend == Backend::kCuda;
  if (on_gpu) {
    // Never train on the CPU behind a job that asked for GPUs.
    const GpuStepHooks& gpu_step = LinkedGpuStep();
    Status gpu = gpu_step.check != nullptr
                     ? gpu_step.check(spec)
                     : Status::Unimplemented(
                           "resources.backend: cuda: this build has no CUDA (configure with "
                           "-DMOERUN_CUDA=ON where the CUDA toolkit is installed), or use "
                           "backend: cpu");
    if (!gpu.ok()) {
      *exit_code = kExitUnsupported;
      return gpu;
    }
  }
  *exit_code = kExitFailure;
  const bool lead = opts.rank == 0;  // writes metrics and the main log
  std::error_code ec;
  fs::create_directories(opts.run_dir, ec);
  if (ec) return Status::IOError("run dir " + opts.run_dir + ": " + ec.message());
  if (lead) std::ofstream(opts.run_dir + "/job.yaml") << spec_yaml;
  const bool tty = lead && opts.progress && isatty(STDERR_FILENO);
  auto log = MakeLogger(
      opts.run_dir + (lead ? "/train.log" : "/train-rank-" + std::to_string(opts.rank) + ".log"),
      (lead && !tty) || opts.control != nullptr);  // a daemon keeps every rank's stderr
  cpu::SetBlasThreads(int(spec.resources.threads_per_trainer));

  std::unique_ptr<comm::Communicator> world;
  if (opts.control != nullptr) {
    // Bind first, tell the coordinator where, and learn where everyone else listens.
    std::shared_ptr<comm::ZmqTransport> transport;
    std::string endpoint;
    if (opts.world > 1) {
      std::vector<std::string> endpoints(size_t(opts.world));
      endpoints[size_t(opts.rank)] = "tcp://" + opts.data_host + ":*";
      auto t = comm::ZmqTransport::Create(opts.rank, endpoints);
      if (!t.ok()) return t.status();
      transport = t.value();
      endpoint = transport->local_endpoint();
    }
    auto table = opts.control->Rendezvous(endpoint, kRendezvousTimeoutMs);
    if (!table.ok()) return table.status();
    log->info("rendezvous: {} ranks, this one at {}", table->size(),
              endpoint.empty() ? "(no data plane)" : endpoint);
    if (int(table->size()) != opts.world) {
      return Status::InvalidArgument("rendezvous table of " + std::to_string(table->size()) +
                                     " ranks for a world of " + std::to_string(opts.world));
    }
    if (opts.world == 1) {
      world = std::make_unique<comm::SoloCommunicator>();
    } else {
      MOERUN_RETURN_IF_ERROR(transport->SetEndpoints(table.value()));
      world = comm::ZmqCommunicator::Create(transport, opts.data_plane_timeout_ms);
    }
  } else if (opts.world == 1) {
    world = std::make_unique<comm::SoloCommunicator>();
  } else {
    auto z = comm::ZmqCommunicator::Create(opts.rank, opts.endpoints, opts.data_plane_timeout_ms);
    if (!z.ok()) return z.status();
    world = std::move(z.value());
  }
  // Every communicator of the topology is split from this one, so all add to `wait`.
  auto wait = std::make_shared<comm::DataPlaneWait>();
  world = std::make_unique<comm::TimedCommunicator>(std::move(world), wait);
  auto topo_or = MakeTopology(spec, std::move(world));
  if (!topo_or.ok()) {
    *exit_code = kExitInvalidConfig;
    return topo_or.status();
  }
  Topology& topo = topo_or.value();

  const ModelSpec& m = spec.model;
  auto corpus = data::Corpus::Load(spec.data, m.vocab_size, m.seq_len);
  if (!corpus.ok()) {
    *exit_code = kExitBadData;
    return corpus.status().WithContext("data");
  }
  *exit_code = kExitFailure;
  log->info(
      "job {} rank {}/{}: stage {} (layers {}-{}), replica {}, experts {}-{}; {} data files, {} "
      "tokens",
      spec.name, topo.rank, topo.world, topo.stage, topo.range.layer_begin,
      topo.range.layer_end - 1, topo.d, topo.range.expert_begin, topo.range.expert_end - 1,
      corpus->files().size(), corpus->tokens());

  const uint64_t fingerprint = ModelFingerprint(m);
  model::Parameters<float> params(model::StageTensors(m, topo.range));
  params.Initialize(spec.train.seed, m.init_std);
  OptimizerState opt{std::vector<float>(params.values().size(), 0.0f),
                     std::vector<float>(params.values().size(), 0.0f)};

  // Every rank opens its shard, then all read the same set of shards, so they agree on the
  // step to resume from.
  const std::string ckpt_dir = CheckpointDir(spec, opts.run_dir);
  const std::string shard = ckpt_dir + "/" + topo.ShardName();
  std::unique_ptr<checkpoint::ShardStore> store;
  if (topo.writes_checkpoint()) {
    fs::create_directories(shard, ec);
    auto s = checkpoint::ShardStore::Open(shard, true);
    if (!s.ok()) return s.status();
    store = std::move(s.value());
  }
  MOERUN_RETURN_IF_ERROR(topo.world_comm->Barrier());
  int64_t step = 0;
  if (opts.restore_step > 0) {
    // The coordinator's newest committed step, and no other: if it cannot be read, the
    // coordinator drops it and restarts everyone from the one before. Only this rank's shard
    // is read (it holds every tensor the rank has), which keeps a restart fast.
    std::unique_ptr<checkpoint::ShardStore> reader;
    checkpoint::ShardStore* src = store.get();
    Status opened;
    if (!src) {
      auto r = checkpoint::ShardStore::Open(shard, false);
      if (r.ok()) {
        reader = std::move(r.value());
      } else {
        opened = r.status();
      }
      src = reader.get();
    }
    auto entries =
        src ? src->ReadStep(opts.restore_step) : Result<std::vector<checkpoint::Entry>>(opened);
    Status s = entries.ok() ? RestoreState(entries.value(), &params, &opt, &step, fingerprint)
                            : entries.status();
    if (!s.ok()) {
      *exit_code = kExitBadCheckpoint;
      return Status::Corruption("committed checkpoint step " + std::to_string(opts.restore_step) +
                                " is unreadable: " + s.message());
    }
    log->info("restored committed checkpoint step {} from {}", step, topo.ShardName());
  } else if (fs::exists(ckpt_dir)) {
    auto run = checkpoint::RunCheckpoints::Open(ckpt_dir);
    auto steps =
        run.ok() ? run->CompleteSteps() : Result<std::vector<int64_t>>(std::vector<int64_t>{});
    if (!steps.ok()) return steps.status();
    if (!opts.resume && !steps->empty()) {
      *exit_code = kExitInvalidConfig;
      return Status::FailedPrecondition(
          ckpt_dir + " already holds checkpoints up to step " + std::to_string(steps->back()) +
          ": continue that run with --resume, or train into a new --run-dir");
    }
    for (auto it = steps->rbegin(); opts.resume && it != steps->rend(); ++it) {
      auto entries = run->ReadStep(*it);
      Status s = entries.ok() ? RestoreState(entries.value(), &params, &opt, &step, fingerprint)
                              : entries.status();
      if (s.ok()) {
        log->info("resumed from checkpoint step {}", step);
        break;
      }
      log->error("checkpoint step {} refused: {}; trying the previous one", *it, s.message());
      params.Initialize(spec.train.seed, m.init_std);  // undo a partial restore
      step = 0;
    }
  }
  MOERUN_RETURN_IF_ERROR(topo.world_comm->Barrier());  // nobody writes before all have read
  if (store) MOERUN_RETURN_IF_ERROR(store->AllowCompaction());

  // The step engine starts from the initialized or restored state.
  std::unique_ptr<model::ModelStage<float>> stage;
  std::unique_ptr<StepEngine> engine;
  if (on_gpu) {
    GpuStepOptions gpu_opts{opts.device, opts.data_plane_timeout_ms, wait};
    auto e = LinkedGpuStep().make(spec, &topo, &params, &opt, &corpus.value(), gpu_opts);
    if (!e.ok()) {
      // A device this host does not have is a placement error, and a missing feature stays
      // missing: neither is retried. Anything else (NCCL meeting a dead peer) may be.
      if (e.status().code() == Status::Code::kInvalidArgument) *exit_code = kExitInvalidConfig;
      if (e.status().code() == Status::Code::kUnimplemented) *exit_code = kExitUnsupported;
      return e.status();
    }
    engine = std::move(e.value());
  } else {
    model::ExpertParallel ep;
    if (topo.expert > 1) ep = {topo.expert_group.get(), m.moe.routed_experts / topo.expert};
    stage = std::make_unique<model::ModelStage<float>>(m, topo.range, &params, spec.train.precision,
                                                       ep);
    engine = std::make_unique<StepRunner>(spec, &topo, &params, stage.get(), &opt, &corpus.value());
  }
  log->info("steps run on {}", engine->Describe());

  const std::string metrics_path = opts.run_dir + "/metrics.jsonl";
  std::ofstream metrics;
  if (lead) {
    if (opts.resume) {
      MOERUN_RETURN_IF_ERROR(TruncateMetrics(metrics_path, step));
    } else {
      std::ofstream(metrics_path, std::ios::trunc);
    }
    metrics.open(metrics_path, std::ios::app);
  }
  // Two-phase commit: shards the writer thread finished, for the coordinator.
  std::mutex shards_mu;
  std::vector<nlohmann::json> shards_written;
  auto report_shards = [&] {
    if (!opts.control) return;
    std::lock_guard<std::mutex> lock(shards_mu);
    for (const auto& j : shards_written) opts.control->ReportShard(j);
    shards_written.clear();
  };
  std::unique_ptr<checkpoint::CheckpointWriter> writer;
  if (store) {
    writer = std::make_unique<checkpoint::CheckpointWriter>(
        store.get(), spec.checkpoint.keep, spec.checkpoint.async,
        [&log, &shards_mu, &shards_written, &topo, &opts](const checkpoint::WriteReport& r) {
          if (r.status.ok()) {
            log->info("checkpoint step {} written: {:.1f} MiB in {:.3f} s", r.step,
                      double(r.bytes) / (1 << 20), r.seconds);
            if (opts.control) {  // reported from the training thread (ReportShards)
              std::lock_guard<std::mutex> lock(shards_mu);
              shards_written.push_back(
                  {{"step", r.step}, {"shard", topo.ShardName()}, {"bytes", r.bytes}});
            }
          } else {
            log->error("checkpoint step {} failed: {}", r.step, r.status.message());
          }
        });
  }

  const int64_t total = spec.train.steps;
  TrainSummary summary;
  summary.first_step = step + 1;
  g_stop.store(false);
  auto old_int = std::signal(SIGINT, OnStopSignal);
  auto old_term = std::signal(SIGTERM, OnStopSignal);
  const auto run_start = Clock::now();
  int64_t run_tokens = 0;
  Status result;

  while (step < total) {
    const auto t0 = Clock::now();
    const comm::DataPlaneWait wait0 = *wait;
    ++step;
    auto r = engine->Run(step, total);
    if (!r.ok()) {
      result = r.status().WithContext("step " + std::to_string(step));
      break;
    }
    nlohmann::json load = nlohmann::json::object();
    double imbalance = 0;
    const double mean = double(spec.train.global_batch * m.seq_len * m.moe.top_k) /
                        double(std::max<int64_t>(1, m.moe.routed_experts));
    for (size_t l = 0; l < r->expert_load.size(); ++l) {
      const auto& c = r->expert_load[l];
      imbalance +=
          double(*std::max_element(c.begin(), c.end())) / mean / double(r->expert_load.size());
      load[std::to_string(m.dense_layers + int64_t(l))] = c;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const double bubble = wait->pipeline_s - wait0.pipeline_s;
    const double data_wait = wait->collective_s - wait0.collective_s;
    const int64_t tokens = spec.train.global_batch * m.seq_len;
    run_tokens += tokens;
    nlohmann::json line = {{"step", step},
                           {"loss", r->loss},
                           {"balance_loss", r->balance_loss},
                           {"lr", r->lr},
                           {"grad_norm", r->grad_norm},
                           {"step_time_s", seconds},
                           {"compute_s", std::max(0.0, seconds - bubble - data_wait)},
                           {"data_wait_s", data_wait},
                           {"bubble_s", bubble},
                           {"tokens_per_s", double(tokens) / seconds},
                           {"max_over_mean_load", imbalance},
                           {"expert_load", load}};
    const bool eval_now =
        spec.train.eval_interval > 0 && (step % spec.train.eval_interval == 0 || step == total);
    if (eval_now && corpus->validation_windows() > 0) {
      const int64_t windows = std::min(kEvalMaxWindows, corpus->validation_windows());
      auto val = engine->Evaluate(windows);
      if (!val.ok()) {
        result = val.status().WithContext("evaluation at step " + std::to_string(step));
        break;
      }
      line["val_loss"] = val.value();
      summary.final_val_loss = val.value();
      log->info("step {} held-out loss {:.4f} over {} windows", step, val.value(), windows);
    }
    if (lead) {
      metrics << line.dump() << "\n";
      metrics.flush();
    }
    if (opts.control) {
      nlohmann::json report = line;
      report["total_steps"] = total;
      if (!lead) report.erase("expert_load");  // rank 0's report is the one stored
      opts.control->ReportStep(report);
    }
    summary.final_loss = r->loss;
    const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
    if (tty) {
      DrawProgress(step, total, r->loss, double(run_tokens) / elapsed,
                   elapsed / double(step - summary.first_step + 1) * double(total - step));
    }
    log->info("step {}/{} loss {:.4f} lr {:.3e} grad_norm {:.3f} load max/mean {:.2f} {:.0f} tok/s",
              step, total, r->loss, r->lr, r->grad_norm, imbalance, double(tokens) / seconds);
    auto stopping = engine->AnyRank(g_stop.load());
    if (!stopping.ok()) {
      result = stopping.status();
      break;
    }
    const bool ckpt_now = spec.checkpoint.interval_steps > 0 &&
                          (step % spec.checkpoint.interval_steps == 0 || step == total);
    if (writer && (ckpt_now || stopping.value())) {
      Status synced = engine->SyncHost();
      if (!synced.ok()) {
        result = synced.WithContext("checkpoint step " + std::to_string(step));
        break;
      }
      writer->Submit(step, SnapshotState(params, opt, step, spec.train.seed, fingerprint));
    }
    report_shards();
    if (stopping.value()) {
      result = Status::Aborted("interrupted after step " + std::to_string(step) +
                               "; a checkpoint was written: continue with --resume");
      break;
    }
  }
  if (writer) writer->Wait();
  report_shards();
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  if (tty) std::fprintf(stderr, "\n");
  summary.last_step = step;
  const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
  summary.tokens_per_s = elapsed > 0 ? double(run_tokens) / elapsed : 0;
  if (!result.ok()) {
    log->error("{}", result.message());
    *exit_code =
        result.code() == Status::Code::kAborted && g_stop.load() ? kExitInterrupted : kExitFailure;
    // A broken data plane must not wait for peers that are gone.
    topo.world_comm->Abort(result.message());
    if (engine) engine->Abort(result.message());
    return result;
  }
  *exit_code = kExitOk;
  log->info("done: step {} loss {:.4f} held-out {:.4f}, {:.0f} tok/s", step, summary.final_loss,
            summary.final_val_loss, summary.tokens_per_s);
  return summary;
}

}  // namespace moerun::trainer
