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
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>

#include "common/exit_codes.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/optimizer.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/data/corpus.h"
#include "worker/model/model_stage.h"
#include "worker/trainer/evaluate.h"
#include "worker/trainer/train_state.h"

namespace moerun::trainer {
namespace {

namespace fs = std::filesystem;
namespace cpu = kernels::cpu;
using Clock = std::chrono::steady_clock;

constexpr int64_t kEvalMaxWindows = 32;  // held-out windows per evaluation during training

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop.store(true); }

std::shared_ptr<spdlog::logger> MakeLogger(const std::string& run_dir, bool to_stderr) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(run_dir + "/train.log"));
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

std::string Duration(double s) {
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

void DrawProgress(int64_t step, int64_t total, double loss, double tps, double eta_s) {
  constexpr int kWidth = 30;
  const int filled = int(double(kWidth) * double(step) / double(total));
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s   ", bar.c_str(),
               (long long)step, (long long)total, loss, tps, Duration(eta_s).c_str());
  std::fflush(stderr);
}

}  // namespace

std::string CheckpointDir(const JobSpec& spec, const std::string& run_dir) {
  return spec.checkpoint.dir.empty() ? run_dir + "/checkpoints" : spec.checkpoint.dir;
}

std::string SingleShardPath(const JobSpec& spec, const std::string& run_dir) {
  return CheckpointDir(spec, run_dir) + "/stage-0/dp-0";
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
  if (spec.model.attention != AttentionKind::kMha) {
    *exit_code = kExitUnsupported;
    return Status::Unimplemented("model.attention: mla is not implemented by the CPU trainer yet");
  }
  *exit_code = kExitFailure;
  std::error_code ec;
  fs::create_directories(opts.run_dir, ec);
  if (ec) return Status::IOError("run dir " + opts.run_dir + ": " + ec.message());
  { std::ofstream(opts.run_dir + "/job.yaml") << spec_yaml; }
  const bool tty = opts.progress && isatty(STDERR_FILENO);
  auto log = MakeLogger(opts.run_dir, !tty);
  cpu::SetBlasThreads(int(spec.resources.threads_per_trainer));

  const ModelSpec& m = spec.model;
  auto corpus = data::Corpus::Load(spec.data, m.vocab_size, m.seq_len);
  if (!corpus.ok()) {
    *exit_code = kExitBadData;
    return corpus.status().WithContext("data");
  }
  *exit_code = kExitFailure;
  log->info("job {}: {} data files, {} tokens ({} for training), {} validation windows", spec.name,
            corpus->files().size(), corpus->tokens(), corpus->train_tokens(),
            corpus->validation_windows());

  model::Parameters<float> params(ModelTensors(m));
  params.Initialize(spec.train.seed, m.init_std);
  model::ModelStage<float> stage(m, {0, m.n_layers, true, true}, &params, spec.train.precision);
  OptimizerState opt{std::vector<float>(params.values().size(), 0.0f),
                     std::vector<float>(params.values().size(), 0.0f)};

  const std::string shard = SingleShardPath(spec, opts.run_dir);
  fs::create_directories(shard, ec);
  auto store = checkpoint::ShardStore::Open(shard, true);
  if (!store.ok()) return store.status();
  int64_t step = 0;
  auto steps = store.value()->CompleteSteps();
  if (!steps.ok()) return steps.status();
  if (!opts.resume && !steps->empty()) {
    // A fresh run must not mix with an earlier run's checkpoints (its newest step would win).
    *exit_code = kExitInvalidConfig;
    return Status::FailedPrecondition(
        shard + " already holds checkpoints up to step " + std::to_string(steps->back()) +
        ": continue that run with --resume, or train into a new --run-dir");
  }
  if (opts.resume) {
    for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
      auto entries = store.value()->ReadStep(*it);
      Status s =
          entries.ok() ? RestoreState(entries.value(), &params, &opt, &step) : entries.status();
      if (s.ok()) {
        log->info("resumed from checkpoint step {}", step);
        break;
      }
      log->error("checkpoint step {} refused: {}; trying the previous one", *it, s.message());
      params.Initialize(spec.train.seed, m.init_std);  // undo a partial restore
      step = 0;
    }
    if (step == 0 && !steps->empty()) log->warn("no readable checkpoint: starting from step 0");
  }
  const std::string metrics_path = opts.run_dir + "/metrics.jsonl";
  if (opts.resume) {
    MOERUN_RETURN_IF_ERROR(TruncateMetrics(metrics_path, step));
  } else {
    std::ofstream(metrics_path, std::ios::trunc);
  }
  std::ofstream metrics(metrics_path, std::ios::app);

  checkpoint::CheckpointWriter writer(
      store.value().get(), spec.checkpoint.keep, spec.checkpoint.async,
      [&log](const checkpoint::WriteReport& r) {
        if (r.status.ok()) {
          log->info("checkpoint step {} written: {:.1f} MiB in {:.3f} s", r.step,
                    double(r.bytes) / (1 << 20), r.seconds);
        } else {
          log->error("checkpoint step {} failed: {}", r.step, r.status.message());
        }
      });

  const int64_t micro = spec.parallel.data * spec.parallel.micro_batches;
  const int64_t mb = spec.train.global_batch / micro, seq = m.seq_len;
  const int64_t total = spec.train.steps;
  std::vector<int32_t> inputs(size_t(mb * seq)), targets(inputs.size());
  model::StageActivations<float> acts;
  std::vector<std::vector<int64_t>> counts;
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
    ++step;
    params.ZeroGrads();
    counts.assign(stage.moe_layers().size(), std::vector<int64_t>(size_t(m.moe.routed_experts), 0));
    double loss = 0, balance = 0;
    for (int64_t i = 0; i < micro; ++i) {
      for (int64_t j = 0; j < mb; ++j) {
        corpus->SampleTrain(spec.train.seed, step - 1, i * mb + j, inputs.data() + j * seq,
                            targets.data() + j * seq);
      }
      loss += stage.Forward(acts, inputs.data(), nullptr, targets.data(), mb, seq, nullptr) /
              double(micro);
      balance += acts.balance_loss / double(micro);
      stage.Backward(acts, 1.0 / double(micro), nullptr, nullptr);
      for (size_t l = 0; l < counts.size(); ++l)
        for (size_t e = 0; e < counts[l].size(); ++e) counts[l][e] += stage.expert_counts()[l][e];
    }
    double sq = 0;
    for (const auto& v : params.views())
      if (v.info.trainable())
        sq += cpu::SumOfSquares(params.grads().data() + v.offset, v.info.numel());
    const double grad_norm = std::sqrt(sq);
    const double clip = cpu::ClipFactor(grad_norm, spec.train.optimizer.grad_clip);
    const double lr = LearningRate(spec.train.optimizer, step, total);
    cpu::AdamWStep adam{lr,
                        spec.train.optimizer.beta1,
                        spec.train.optimizer.beta2,
                        spec.train.optimizer.eps,
                        spec.train.optimizer.weight_decay,
                        step};
    for (const auto& v : params.views()) {
      if (!v.info.trainable()) continue;
      float* g = params.grads().data() + v.offset;
      if (clip != 1.0) cpu::ScaleInPlace(g, v.info.numel(), float(clip));
      cpu::AdamWUpdate(params.values().data() + v.offset, g, opt.m.data() + v.offset,
                       opt.v.data() + v.offset, v.info.numel(), adam, v.info.is_matrix());
    }
    nlohmann::json load = nlohmann::json::object();
    double imbalance = 0;
    for (size_t l = 0; l < counts.size(); ++l) {
      stage.UpdateBalanceBias(stage.moe_layers()[l], counts[l].data(),
                              m.moe.balance.bias_update_speed);
      const double mean = double(mb * micro * seq * m.moe.top_k) / double(m.moe.routed_experts);
      imbalance += double(*std::max_element(counts[l].begin(), counts[l].end())) / mean /
                   double(counts.size());
      load[std::to_string(stage.moe_layers()[l])] = counts[l];
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t tokens = spec.train.global_batch * seq;
    run_tokens += tokens;
    nlohmann::json line = {{"step", step},
                           {"loss", loss},
                           {"balance_loss", balance},
                           {"lr", lr},
                           {"grad_norm", grad_norm},
                           {"step_time_s", seconds},
                           {"tokens_per_s", double(tokens) / seconds},
                           {"max_over_mean_load", imbalance},
                           {"expert_load", load}};
    const bool eval_now =
        spec.train.eval_interval > 0 && (step % spec.train.eval_interval == 0 || step == total);
    if (eval_now && corpus->validation_windows() > 0) {
      const int64_t windows = std::min(kEvalMaxWindows, corpus->validation_windows());
      const double val = MeanCrossEntropy(
          stage, windows, seq, mb,
          [&](int64_t k, int32_t* in, int32_t* tg) { corpus->ValidationWindow(k, in, tg); });
      line["val_loss"] = val;
      summary.final_val_loss = val;
      log->info("step {} held-out loss {:.4f} over {} windows", step, val, windows);
    }
    metrics << line.dump() << "\n";
    metrics.flush();
    summary.final_loss = loss;
    const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
    const double tps = double(run_tokens) / elapsed;
    if (tty) {
      DrawProgress(step, total, loss, tps,
                   elapsed / double(step - summary.first_step + 1) * double(total - step));
    }
    log->info("step {}/{} loss {:.4f} lr {:.3e} grad_norm {:.3f} load max/mean {:.2f} {:.0f} tok/s",
              step, total, loss, lr, grad_norm, imbalance, double(tokens) / seconds);
    const bool stopping = g_stop.load();
    const bool ckpt_now = spec.checkpoint.interval_steps > 0 &&
                          (step % spec.checkpoint.interval_steps == 0 || step == total);
    if (ckpt_now || stopping)
      writer.Submit(step, SnapshotState(params, opt, step, spec.train.seed));
    if (stopping) {
      result = Status::Aborted("interrupted after step " + std::to_string(step) +
                               "; a checkpoint was written: continue with --resume");
      break;
    }
  }
  writer.Wait();
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  if (tty) std::fprintf(stderr, "\n");
  summary.last_step = step;
  const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
  summary.tokens_per_s = elapsed > 0 ? double(run_tokens) / elapsed : 0;
  if (!result.ok()) {
    *exit_code = kExitInterrupted;
    return result;
  }
  *exit_code = kExitOk;
  log->info("done: step {} loss {:.4f} held-out {:.4f}, {:.0f} tok/s", step, summary.final_loss,
            summary.final_val_loss, summary.tokens_per_s);
  return summary;
}

}  // namespace moerun::trainer
