#include "coordinator/cli/job_follower.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/control_socket.h"
#include "common/curve_auth.h"
#include "common/duration_text.h"
#include "common/exit_codes.h"
#include "common/timeouts.h"
#include "coordinator/cli/run_dir.h"
#include "coordinator/cli/status_format.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::cli {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

bool IsEnded(const std::string& phase) {
  return phase == "SUCCEEDED" || phase == "FAILED" || phase == "CANCELLED" || phase == "STOPPED";
}

std::string ReadEndpoint(const std::string& path) {
  std::ifstream in(path);
  std::string ep;
  in >> ep;
  return ep;
}

}  // namespace

int CheckJobBeforeStart(const LoadedJobSpec& loaded, const std::string& file, int64_t steps,
                        const std::string& run_dir, const std::string& who) {
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status gpu = trainer::TrainerSupport(loaded.spec); !gpu.ok()) {
    // Refused here rather than by every trainer after the job is placed.
    std::fprintf(stderr, "%s: %s\n", who.c_str(), gpu.message().c_str());
    return kExitUnsupported;
  }
  // What the coordinator would refuse at submit is refused here, before anything starts.
  const int64_t warmup = loaded.spec.train.optimizer.warmup_steps;
  if (steps > 0 && steps < warmup) {
    std::fprintf(stderr,
                 "%s: --steps %lld is fewer than train.optimizer.warmup_steps (%lld) in %s: train "
                 "at least that many steps, or shorten the warm-up\n",
                 who.c_str(), (long long)steps, (long long)warmup, file.c_str());
    return kExitInvalidConfig;
  }
  if (Status m = CheckRunDirModel(loaded, file, run_dir); !m.ok()) {
    std::fprintf(stderr, "%s\n", m.message().c_str());
    return kExitInvalidConfig;
  }
  return 0;
}

Result<std::string> SubmitResumingJob(ControlClient& client, const std::string& file,
                                      const std::string& run_dir, int64_t steps) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  auto submitted = client.Request(MessageType::kSubmitJob, "",
                                  {{"spec_yaml", text.str()},
                                   {"source", file},
                                   {"spec_dir", fs::absolute(file).parent_path().string()},
                                   {"run_dir", run_dir},
                                   {"steps", steps},
                                   {"resume", true}},
                                  kCliRequestTimeoutMs);
  if (!submitted.ok()) return submitted.status();
  return submitted->value("job_id", "");
}

Status PrepareClusterKeys(const std::string& coord_dir, const std::string& keys_dir,
                          const std::string& who) {
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
  auth << "# written by `" << who << "`: the key of its CLI, daemons and trainers\n"
       << client->public_key << "\n";
  return auth ? Status::OK() : Status::IOError("cannot write authorized_keys in " + coord_dir);
}

std::string WaitForEndpoint(const std::string& coord_dir, SupervisedChild& coord,
                            const std::string& who) {
  std::string endpoint;
  const auto deadline = SteadyClock::now() + std::chrono::milliseconds(kCoordinatorStartTimeoutMs);
  while ((endpoint = ReadEndpoint(coord_dir + "/endpoint")).empty()) {
    if (!ChildAlive(coord.pid) || SteadyClock::now() > deadline) {
      std::fprintf(stderr, "%s: the coordinator did not start; see %s\n", who.c_str(),
                   coord.log.c_str());
      StopChild(coord.pid);
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kChildPollMs));
  }
  return endpoint;
}

FollowResult FollowJob(ControlClient& client, const std::string& job, SupervisedChild& coord,
                       std::vector<SupervisedChild>& daemons, const FollowOptions& opts) {
  const char* who = opts.who.c_str();
  FollowResult out;
  std::string phase;
  int64_t last_printed_step = -1;
  bool stop_sent = false;
  auto last_answer = SteadyClock::now();
  auto last_stop_ask = SteadyClock::time_point{};
  for (;;) {
    if (opts.interrupted && opts.interrupted->load() && !out.cancelled) {
      std::fprintf(stderr, "\n%s: interrupted; cancelling %s\n", who, job.c_str());
      (void)client.Request(MessageType::kCancelJob, job, nlohmann::json::object(),
                           kCliRequestTimeoutMs);
      out.cancelled = true;
    }
    // Asked again until the coordinator says it is stopping: one relaunched meanwhile forgot.
    if (opts.stop_asked && opts.stop_asked->load() && !out.cancelled &&
        SteadyClock::now() - last_stop_ask > std::chrono::milliseconds(kStopAskAgainMs) &&
        out.detail.value("stopping", std::string()).empty() && !IsEnded(phase)) {
      const std::string reason = opts.stop_reason();
      if (!stop_sent)
        std::fprintf(stderr, "\n%s: %s; stopping %s after a checkpoint\n", who, reason.c_str(),
                     job.c_str());
      stop_sent = true;
      last_stop_ask = SteadyClock::now();
      auto r =
          client.Request(MessageType::kStopJob, job, {{"reason", reason}}, kCliRequestTimeoutMs);
      if (!r.ok()) std::fprintf(stderr, "%s: stop: %s\n", who, r.status().message().c_str());
    }
    coord.ReviveIfDead();
    for (auto& d : daemons) d.ReviveIfDead();
    out.fatal_exit = coord.fatal_exit;
    for (const auto& d : daemons)
      out.fatal_exit = out.fatal_exit != 0 ? out.fatal_exit : d.fatal_exit;
    if (out.fatal_exit != 0) return out;
    // A short wait: a dead coordinator is noticed and relaunched within about a second.
    auto reply = client.Request(MessageType::kQuery, job, {{"what", "job"}}, kLocalPollTimeoutMs);
    if (!reply.ok()) {
      // The coordinator may be restarting; it gets a while before we give up.
      if (SteadyClock::now() - last_answer > std::chrono::milliseconds(kLocalGiveUpMs)) {
        std::fprintf(stderr, "\n%s: %s\n", who, reply.status().message().c_str());
        out.phase.clear();
        return out;
      }
      continue;
    }
    last_answer = SteadyClock::now();
    out.detail = reply.value();
    if (opts.kill_silent_daemons) {
      auto cluster =
          client.Request(MessageType::kQuery, "", {{"what", "status"}}, kLocalPollTimeoutMs);
      if (cluster.ok() && cluster->contains("workers")) {
        for (auto& d : daemons) d.KillIfSilent((*cluster)["workers"]);
      }
    }
    const std::string now_phase = out.detail.value("phase", "");
    if (now_phase != phase) {
      if (opts.progress_line && !phase.empty()) std::fprintf(stderr, "\n");
      std::fprintf(stderr, "%s: %s %s%s\n", who, job.c_str(), now_phase.c_str(),
                   out.detail.contains("last_event")
                       ? (": " + out.detail["last_event"].get<std::string>()).c_str()
                       : "");
      phase = now_phase;
    }
    out.phase = phase;
    if (IsEnded(phase)) return out;
    const int64_t step = out.detail.value("step", int64_t(0));
    const int64_t total = std::max<int64_t>(1, out.detail.value("total_steps", int64_t(1)));
    if (phase == "RUNNING" && step > 0) {
      if (opts.progress_line) {
        std::fprintf(stderr, "\r%s   ", FormatProgress(out.detail).c_str());
      } else if (step * 10 / total != last_printed_step * 10 / total || last_printed_step < 0) {
        std::fprintf(stderr, "%s\n", FormatProgress(out.detail).c_str());
        last_printed_step = step;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kLocalPollMs));
  }
}

int ReportOutcome(const FollowResult& r, const std::string& job, const std::string& run_dir,
                  double wall_s, const std::string& who) {
  const nlohmann::json& d = r.detail;
  std::printf("job %s %s in %s: step %lld/%lld", job.c_str(),
              r.phase.empty() ? "(coordinator lost)" : r.phase.c_str(),
              DurationText(wall_s).c_str(), (long long)d.value("step", int64_t(0)),
              (long long)d.value("total_steps", int64_t(0)));
  if (d.contains("loss") && d["loss"].is_number())
    std::printf(", loss %.4f", d["loss"].get<double>());
  if (d.contains("val_loss") && d["val_loss"].is_number())
    std::printf(", held-out %.4f", d["val_loss"].get<double>());
  if (d.contains("tokens_per_s") && d["tokens_per_s"].is_number())
    std::printf(", %.0f tokens/s", d["tokens_per_s"].get<double>());
  std::printf("; %lld restart(s)\nrun dir %s (metrics.jsonl, checkpoints/, control/)\n",
              (long long)d.value("restarts", int64_t(0)), run_dir.c_str());
  if (r.phase == "SUCCEEDED") return kExitOk;
  if (r.phase == "STOPPED") return kExitStopped;  // its event was shown with the phase
  if (r.phase == "CANCELLED") return r.cancelled ? kExitInterrupted : kExitFailure;
  const std::string control = run_dir + "/control";
  std::fprintf(stderr,
               "%s: %s\n  coordinator log: %s/coordinator/coordinator.log\n  trainer logs: "
               "%s/worker-*/logs/%s/rank-*.log\n",
               who.c_str(), d.value("last_event", std::string("the job failed")).c_str(),
               control.c_str(), control.c_str(), job.c_str());
  return kExitFailure;
}

}  // namespace moerun::cli
