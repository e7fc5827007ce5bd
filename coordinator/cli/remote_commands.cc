// The CLI verbs that talk to a running coordinator:
//   moerun submit JOB.yaml [--run-dir DIR] [--steps N] [--resume] [--json]
//   moerun status [JOB] [--json] [--watch]
//   moerun cancel JOB
//   moerun events JOB [--json]
//   moerun logs JOB [--rank R] [-f]
//   moerun worker remove ID
// and `moerun keygen DIR` for a client key directory. Every verb takes --coordinator ADDR
// (or MOERUN_COORDINATOR) and --keys DIR (or MOERUN_KEYS).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "common/timeouts.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/control_client.h"
#include "coordinator/cli/status_format.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::cli {
namespace {

namespace fs = std::filesystem;

struct Remote {
  std::string address = kDefaultCoordinator;
  std::string keys = DefaultKeysDir();
};

void AddRemoteOptions(CLI::App* cmd, Remote* r) {
  cmd->add_option("--coordinator", r->address, "coordinator control address")
      ->envname("MOERUN_COORDINATOR")
      ->capture_default_str();
  cmd->add_option("--keys", r->keys, "client key directory (client.key, coordinator.key)")
      ->envname("MOERUN_KEYS")
      ->capture_default_str();
}

// One request; on failure prints the reason and returns nullopt.
Result<nlohmann::json> Request(const Remote& r, MessageType type, const std::string& job,
                               nlohmann::json body) {
  auto client = ControlClient::Connect(r.address, r.keys);
  if (!client.ok()) return client.status();
  return client.value()->Request(type, job, std::move(body), kCliRequestTimeoutMs);
}

// One request; on failure prints the reason and sets *code (CliExitCode) and returns nullopt.
std::optional<nlohmann::json> Ask(const Remote& r, MessageType type, const std::string& job,
                                  nlohmann::json body, int* code) {
  auto reply = Request(r, type, job, std::move(body));
  *code = CliExitCode(reply.status());
  if (!reply.ok()) {
    std::fprintf(stderr, "moerun: %s\n", reply.status().message().c_str());
    return std::nullopt;
  }
  return reply.value();
}

int64_t NowMs() { return WallClock().NowMs(); }

int RunSubmit(const Remote& r, const std::string& file, std::string run_dir, int64_t steps,
              bool resume, bool json) {
  LoadedJobSpec loaded = LoadJobSpecFile(file);
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status gpu = trainer::TrainerSupport(loaded.spec); !gpu.ok()) {
    // Refused here rather than by every trainer after the job is placed.
    std::fprintf(stderr, "moerun %s: %s\n", "submit", gpu.message().c_str());
    return kExitUnsupported;
  }
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json body = {{"spec_yaml", text.str()},
                         {"source", file},
                         {"spec_dir", fs::absolute(file).parent_path().string()},
                         {"steps", steps},
                         {"resume", resume}};
  if (!run_dir.empty()) body["run_dir"] = fs::absolute(run_dir).lexically_normal().string();
  int code = kExitOk;
  auto reply = Ask(r, MessageType::kSubmitJob, "", body, &code);
  if (!reply) return code;
  if (json) {
    std::printf("%s\n", reply->dump().c_str());
  } else {
    std::printf("submitted %s: %s, %lld ranks, run dir %s\n", reply->value("job_id", "").c_str(),
                reply->value("phase", "").c_str(), (long long)reply->value("world", 0),
                reply->value("run_dir", "").c_str());
    if (reply->contains("note")) std::printf("%s\n", (*reply)["note"].get<std::string>().c_str());
  }
  return kExitOk;
}

int RunStatus(const Remote& r, const std::string& job, bool json, bool watch) {
  for (;;) {
    auto reply = job.empty() ? Request(r, MessageType::kQuery, "", {{"what", "status"}})
                             : Request(r, MessageType::kQuery, job, {{"what", "job"}});
    if (!reply.ok()) {
      std::fprintf(stderr, "moerun: %s\n", reply.status().message().c_str());
      // A watch outlives a coordinator restart; a refused key or a bad request ends it.
      const auto code = reply.status().code();
      if (!watch || (code != Status::Code::kTimedOut && code != Status::Code::kUnavailable))
        return CliExitCode(reply.status());
      std::fprintf(stderr, "moerun: retrying every second (Ctrl-C to stop)\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(kStatusWatchIntervalMs));
      continue;
    }
    const bool tty = isatty(STDOUT_FILENO);
    // Colours on a terminal, unless NO_COLOR asks otherwise (no-color.org).
    const bool color = tty && std::getenv("NO_COLOR") == nullptr;
    std::string text = json ? reply->dump() + "\n"
                            : (job.empty() ? FormatStatus(*reply, NowMs(), color)
                                           : FormatJob(*reply, NowMs(), color));
    if (watch && tty && !json) text = "\033[H\033[2J" + text;
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    if (!watch) return kExitOk;
    std::this_thread::sleep_for(std::chrono::milliseconds(kStatusWatchIntervalMs));
  }
}

int RunLogs(const Remote& r, const std::string& job, int rank, bool follow) {
  auto client = ControlClient::Connect(r.address, r.keys);
  if (!client.ok()) {
    std::fprintf(stderr, "moerun: %s\n", client.status().message().c_str());
    return CliExitCode(client.status());
  }
  int64_t offset = 0;
  for (;;) {
    auto reply = client.value()->Request(
        MessageType::kQuery, job,
        {{"what", "log"}, {"job", job}, {"rank", rank}, {"offset", offset}}, kCliRequestTimeoutMs);
    if (!reply.ok()) {
      std::fprintf(stderr, "moerun logs: %s\n", reply.status().message().c_str());
      return CliExitCode(reply.status());
    }
    const std::string data = reply->value("data", "");
    std::fwrite(data.data(), 1, data.size(), stdout);
    std::fflush(stdout);
    offset = reply->value("next_offset", offset);
    if (offset < reply->value("size", int64_t(0))) continue;  // more right away
    if (!follow) return kExitOk;
    auto state =
        client.value()->Request(MessageType::kQuery, job, {{"what", "job"}}, kCliRequestTimeoutMs);
    if (!state.ok()) {
      std::fprintf(stderr, "moerun logs: %s\n", state.status().message().c_str());
      return CliExitCode(state.status());
    }
    const std::string phase = state->value("phase", "");
    if (phase == "SUCCEEDED" || phase == "FAILED" || phase == "CANCELLED" || phase == "STOPPED")
      return kExitOk;
    std::this_thread::sleep_for(std::chrono::milliseconds(kLogFollowIntervalMs));
  }
}

int RunKeygen(const std::string& dir, const std::string& coordinator_key) {
  // Everything that can be refused is checked before a file is written, and a failure after
  // that removes what this run wrote: a failed keygen leaves DIR as it found it.
  if (fs::exists(dir + "/client.key_secret")) {
    std::fprintf(stderr, "moerun keygen: %s already holds a client key; remove it first\n",
                 dir.c_str());
    return kExitInvalidConfig;
  }
  std::string coordinator_public;
  if (!coordinator_key.empty()) {
    std::ifstream in(coordinator_key);
    std::getline(in, coordinator_public);
    if (coordinator_public.size() != 40) {  // a Z85 CURVE public key
      std::fprintf(
          stderr,
          "moerun keygen: --coordinator-key %s %s: give the coordinator's "
          "coordinator.key (in its state dir)\n",
          coordinator_key.c_str(),
          in || !coordinator_public.empty() ? "is not a CURVE public key" : "cannot be read");
      return kExitInvalidConfig;
    }
  }
  auto keys = GenerateCurveKeyPair();
  if (!keys.ok()) {
    std::fprintf(stderr, "moerun keygen: %s\n", keys.status().message().c_str());
    return kExitFailure;
  }
  std::error_code ec;
  const bool made_dir = !fs::exists(dir);
  fs::create_directories(dir, ec);
  Status s = ec ? Status::IOError("cannot create " + dir + ": " + ec.message())
                : SaveCurveKeyPair(dir, kClientKeyName, keys.value());
  if (s.ok() && !coordinator_key.empty()) {
    fs::copy_file(coordinator_key, dir + "/coordinator.key", fs::copy_options::overwrite_existing,
                  ec);
    if (ec) s = Status::IOError("cannot copy " + coordinator_key + ": " + ec.message());
  }
  if (!s.ok()) {
    std::fprintf(stderr, "moerun keygen: %s\n", s.message().c_str());
    for (const char* f : {"/client.key", "/client.key_secret", "/coordinator.key"})
      if (std::string(f) != "/coordinator.key" || !coordinator_key.empty()) fs::remove(dir + f, ec);
    if (made_dir) fs::remove(dir, ec);  // only if empty
    return kExitFailure;
  }
  std::printf("%s\n", keys->public_key.c_str());
  std::fprintf(
      stderr,
      "client key pair written to %s; add the line above to authorized_keys in the "
      "coordinator's state dir%s\n",
      dir.c_str(),
      (coordinator_key.empty() ? ", and copy its coordinator.key into " + dir : "").c_str());
  return kExitOk;
}

}  // namespace

void AddRemoteCommands(CLI::App& app, int* exit_code) {
  {
    struct A {
      Remote r;
      std::string file, run_dir;
      int64_t steps = 0;
      bool resume = false, json = false;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd =
        app.add_subcommand("submit", "Validate a job spec and submit it to a coordinator");
    cmd->add_option("file", a->file, "job spec YAML file")->required();
    cmd->add_option("--run-dir", a->run_dir,
                    "run directory on the worker hosts [coordinator's jobs dir/<job id>]");
    cmd->add_option("--steps", a->steps, "train this many steps instead of train.steps")
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--resume", a->resume, "continue from checkpoints already in the run dir");
    cmd->add_flag("--json", a->json, "print the answer as JSON");
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] {
      *exit_code = RunSubmit(a->r, a->file, a->run_dir, a->steps, a->resume, a->json);
    });
  }
  {
    struct A {
      Remote r;
      std::string job;
      bool json = false, watch = false;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("status", "Jobs and workers, or one job's ranks");
    cmd->add_option("job", a->job, "a job id: its detail");
    cmd->add_flag("--json", a->json, "print the coordinator's answer as JSON");
    cmd->add_flag("--watch", a->watch, "refresh every second until interrupted");
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] { *exit_code = RunStatus(a->r, a->job, a->json, a->watch); });
  }
  {
    struct A {
      Remote r;
      std::string job;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("cancel", "Cancel a job and stop its trainers");
    cmd->add_option("job", a->job, "job id")->required();
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] {
      auto reply = Ask(a->r, MessageType::kCancelJob, a->job, nlohmann::json::object(), exit_code);
      if (reply) std::printf("%s %s\n", a->job.c_str(), reply->value("phase", "").c_str());
    });
  }
  {
    struct A {
      Remote r;
      std::string job, reason;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand(
        "stop",
        "Stop a job after a last checkpoint: its trainers checkpoint the step they are in and "
        "exit, the job ends STOPPED; submitting it again with the same run dir continues");
    cmd->add_option("job", a->job, "job id")->required();
    cmd->add_option("--reason", a->reason, "why, for the job's events [asked by a client]");
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] {
      auto reply = Ask(a->r, MessageType::kStopJob, a->job, {{"reason", a->reason}}, exit_code);
      if (reply) {
        std::printf("%s %s\n", a->job.c_str(),
                    reply->value("stopping", false)
                        ? "stopping: its trainers checkpoint the step they are in, then exit "
                          "(`moerun status` shows STOPPED once they have)"
                        : reply->value("phase", "").c_str());
      }
    });
  }
  {
    struct A {
      Remote r;
      std::string job;
      bool json = false;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("events", "A job's state transitions with time and cause");
    cmd->add_option("job", a->job, "job id")->required();
    cmd->add_flag("--json", a->json, "print as JSON");
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] {
      auto reply = Ask(a->r, MessageType::kQuery, a->job, {{"what", "events"}}, exit_code);
      if (reply) {
        const std::string text =
            a->json ? reply->at("events").dump() + "\n" : FormatEvents(reply->at("events"));
        std::fputs(text.c_str(), stdout);
      }
    });
  }
  {
    struct A {
      Remote r;
      std::string job;
      int rank = 0;
      bool follow = false;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("logs", "A trainer's output, from the host that runs it");
    cmd->add_option("job", a->job, "job id")->required();
    cmd->add_option("--rank", a->rank, "trainer rank")->capture_default_str();
    cmd->add_flag("-f,--follow", a->follow, "keep printing until the job ends");
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] { *exit_code = RunLogs(a->r, a->job, a->rank, a->follow); });
  }
  {
    struct A {
      Remote r;
      std::string worker;
    };
    auto a = std::make_shared<A>();
    CLI::App* group = app.add_subcommand("worker", "The worker daemons a coordinator knows");
    group->require_subcommand(1);
    CLI::App* cmd = group->add_subcommand(
        "remove", "Forget a dead daemon that will not return (it leaves `moerun status`)");
    cmd->add_option("id", a->worker, "the daemon's --id")->required();
    AddRemoteOptions(cmd, &a->r);
    cmd->callback([a, exit_code] {
      auto reply =
          Ask(a->r, MessageType::kRemoveWorker, a->worker, nlohmann::json::object(), exit_code);
      if (reply) std::printf("worker %s removed\n", a->worker.c_str());
    });
  }
  {
    struct A {
      std::string dir, coordinator_key;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd =
        app.add_subcommand("keygen", "Create a client key pair (for a daemon or the CLI)");
    cmd->add_option("dir", a->dir, "key directory to create")->required();
    cmd->add_option("--coordinator-key", a->coordinator_key,
                    "the coordinator's coordinator.key, copied into DIR");
    cmd->callback([a, exit_code] { *exit_code = RunKeygen(a->dir, a->coordinator_key); });
  }
}

}  // namespace moerun::cli
