#include "worker/daemon/worker_daemon.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/exit_codes.h"
#include "common/limits.h"
#include "common/timeouts.h"

namespace moerun::worker {
namespace {

namespace fs = std::filesystem;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Job ids name directories here: only what the coordinator hands out ([A-Za-z0-9._-]).
bool SafeJobId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

// The trainer's own account of a refusal: the last "moerun train: ..." line of its log (the
// file's last 4 KiB), without the prefix and at most 400 characters; empty when there is none.
std::string TrainerRefusal(const std::string& log_path) {
  constexpr std::streamoff kTail = 4096;
  constexpr size_t kMaxChars = 400;
  const std::string prefix = "moerun train: ";
  std::ifstream in(log_path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kTail));
  std::string line, found;
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) found = line.substr(prefix.size());
  if (found.size() > kMaxChars) found = found.substr(0, kMaxChars) + "...";
  return found;
}

}  // namespace

WorkerDaemon::WorkerDaemon(DaemonOptions opts)
    : opts_(std::move(opts)), supervisor_([this](const TrainerExit& e) {
        const TrainerKey key{e.job_id, e.generation, e.rank};
        TrainerState& t = trainers_[key];
        t.pid = e.pid;
        t.running = false;
        t.exit_code = e.exit_code;
        t.signal = e.signal;
        t.text = e.Describe();
        // A refusal is final (never retried): say why where the admin looks, not only in
        // the trainer's log.
        if (e.signal == 0 &&
            (IsNonRetryableExit(e.exit_code) || e.exit_code == kExitBadCheckpoint)) {
          const std::string why = TrainerRefusal(LogPath(e.job_id, e.rank));
          if (!why.empty()) t.text += ": " + why;
        }
        new_exits_.push_back(key);
        spdlog::info("job {} generation {} rank {} (pid {}) {}", e.job_id, e.generation, e.rank,
                     e.pid, t.text);
      }) {}

WorkerDaemon::~WorkerDaemon() {
  // Here, not in the supervisor's destructor: its exit callback touches members that are
  // destroyed before it.
  std::set<std::string> jobs;
  for (const auto& [key, t] : trainers_) jobs.insert(std::get<0>(key));
  for (const auto& j : jobs) supervisor_.StopJob(j, kShutdownGraceMs);
}

Result<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(DaemonOptions opts) {
  auto keys = LoadClientKeys(opts.keys_dir);
  if (!keys.ok()) return keys.status();
  if (access(opts.trainer_program.c_str(), X_OK) != 0) {
    return Status::NotFound("trainer program " + opts.trainer_program + " is not executable");
  }
  std::unique_ptr<WorkerDaemon> d(new WorkerDaemon(std::move(opts)));
  auto dealer = ConnectDealer(d->ctx_, keys.value(),
                              {d->opts_.coordinator, "worker:" + d->opts_.id, /*immediate=*/true});
  if (!dealer.ok()) return dealer.status();
  d->dealer_ = std::move(dealer.value());
  return d;
}

void WorkerDaemon::Send(MessageType type, const std::string& job_id, uint64_t generation,
                        nlohmann::json body) {
  auto sent = SendEnvelope(*dealer_, {type, generation, job_id, "worker:" + opts_.id, body});
  if (!sent.ok()) spdlog::warn("cannot send {}: {}", ToString(type), sent.status().message());
  // Not sent (no connection): the next heartbeat carries the same state.
}

nlohmann::json WorkerDaemon::Registration() const {
  return {{"host", opts_.host},
          {"devices", opts_.devices},
          {"backend", opts_.backend},
          {"data_host", opts_.data_host},
          {"pid", int64_t(getpid())}};
}

void WorkerDaemon::SendHeartbeat(MessageType type) {
  nlohmann::json body = Registration();
  body["seq"] = ++seq_;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [key, t] : trainers_) {
    list.push_back({{"job", std::get<0>(key)},
                    {"generation", std::get<1>(key)},
                    {"rank", std::get<2>(key)},
                    {"pid", t.pid},
                    {"running", t.running},
                    {"exit_code", t.exit_code},
                    {"signal", t.signal},
                    {"text", t.text}});
  }
  body["trainers"] = list;
  Send(type, "", 0, body);
}

void WorkerDaemon::Run(const std::atomic<bool>& stop) {
  spdlog::info("worker {} on {}: {} {} slots, coordinator {}", opts_.id, opts_.host, opts_.devices,
               opts_.backend, opts_.coordinator);
  int64_t next_beat = 0;
  last_answer_ms_ = SteadyMs();
  while (!stop.load()) {
    auto msg = ReceiveEnvelope(*dealer_, kDaemonTickMs);
    const int64_t now = SteadyMs();
    if (!msg.ok()) {
      spdlog::warn("dropped a message from the coordinator: {}", msg.status().message());
    } else if (msg->has_value()) {
      last_answer_ms_ = now;
      if (coordinator_away_) {
        spdlog::info("the coordinator answers again");
        coordinator_away_ = false;
      }
      try {
        OnMessage(**msg);
      } catch (const nlohmann::json::exception& e) {
        spdlog::warn("dropped {} from the coordinator: {}", ToString((*msg)->type), e.what());
      }
    }
    supervisor_.Poll();
    if (!new_exits_.empty()) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& key : new_exits_) {
        const TrainerState& t = trainers_[key];
        list.push_back({{"job", std::get<0>(key)},
                        {"generation", std::get<1>(key)},
                        {"rank", std::get<2>(key)},
                        {"pid", t.pid},
                        {"running", false},
                        {"exit_code", t.exit_code},
                        {"signal", t.signal},
                        {"text", t.text}});
      }
      new_exits_.clear();
      Send(MessageType::kTrainerExited, "", 0, {{"trainers", list}});
    }
    StartPending();
    if (now >= next_beat) {
      SendHeartbeat(registered_ ? MessageType::kHeartbeat : MessageType::kRegister);
      next_beat = now + heartbeat_interval_ms_;
    }
    if (!coordinator_away_ && now - last_answer_ms_ > 3 * heartbeat_interval_ms_) {
      coordinator_away_ = true;
      spdlog::warn("no answer from the coordinator for {} ms: reconnecting; trainers keep running",
                   now - last_answer_ms_);
    }
    // The lease: silent for the heartbeat timeout, the coordinator has declared this daemon
    // dead and restarts its ranks elsewhere. Its trainers must not go on beside the new
    // generation (a shared checkpoint shard has one writer), so they stop here.
    if (lease_ms_ > 0 && !self_fenced_ && now - last_answer_ms_ > lease_ms_ &&
        supervisor_.Running() > 0) {
      self_fenced_ = true;
      spdlog::warn(
          "no answer from the coordinator for {} ms (the heartbeat timeout): stopping "
          "{} trainer(s), whose generation it has ended",
          now - last_answer_ms_, supervisor_.Running());
      std::set<std::string> jobs;
      for (const auto& [key, t] : trainers_) jobs.insert(std::get<0>(key));
      for (const auto& j : jobs) supervisor_.Terminate(j, UINT64_MAX, kFenceGraceMs);
    }
    if (now - last_answer_ms_ <= lease_ms_) self_fenced_ = false;
  }
  spdlog::info("worker {} stopping: {} trainer(s) to stop", opts_.id, supervisor_.Running());
  std::set<std::string> jobs;
  for (const auto& [key, t] : trainers_) jobs.insert(std::get<0>(key));
  for (const auto& j : jobs) supervisor_.StopJob(j);
  supervisor_.Poll();
  SendHeartbeat(MessageType::kHeartbeat);  // the exits, best effort
}

void WorkerDaemon::OnMessage(const Envelope& e) {
  switch (e.type) {
    case MessageType::kRegistered:
      if (!registered_) spdlog::info("registered with the coordinator");
      registered_ = true;
      heartbeat_interval_ms_ =
          std::max<int64_t>(10, e.body.value("heartbeat_interval_ms", heartbeat_interval_ms_));
      lease_ms_ = std::max<int64_t>(0, e.body.value("heartbeat_timeout_ms", int64_t(0)));
      OnAcked(e.body.value("acked", nlohmann::json::array()));
      return;
    case MessageType::kReply:
      OnAcked(e.body.value("acked", nlohmann::json::array()));
      return;
    case MessageType::kStartTrainers:
      OnStart(e);
      return;
    case MessageType::kStopTrainers:
      OnStop(e);
      return;
    case MessageType::kQuery:
      OnLogQuery(e);
      return;
    case MessageType::kError:
      spdlog::warn("the coordinator says: {}", e.body.value("error", std::string("?")));
      return;
    default:
      spdlog::warn("ignored {} from the coordinator", ToString(e.type));
  }
}

void WorkerDaemon::OnAcked(const nlohmann::json& acked) {
  for (const auto& a : acked) {
    const TrainerKey key{a.at("job").get<std::string>(), a.at("generation").get<uint64_t>(),
                         a.at("rank").get<int>()};
    auto it = trainers_.find(key);
    if (it != trainers_.end() && !it->second.running) trainers_.erase(it);
  }
}

void WorkerDaemon::OnStart(const Envelope& e) {
  if (!SafeJobId(e.job_id) || e.generation == 0) {
    spdlog::warn("ignored a start for job '{}' generation {}", e.job_id, e.generation);
    return;
  }
  // Fencing: older generations of the job stop before this one starts.
  supervisor_.Terminate(e.job_id, e.generation, kFenceGraceMs);
  for (auto it = started_.begin(); it != started_.end();) {
    it = std::get<0>(*it) == e.job_id && std::get<1>(*it) < e.generation ? started_.erase(it)
                                                                         : std::next(it);
  }
  for (const auto& p : pending_) {
    if (p.job_id == e.job_id && p.generation == e.generation) return;  // already waiting
  }
  pending_.push_back({e.job_id, e.generation, e.body});
  StartPending();
}

void WorkerDaemon::OnStop(const Envelope& e) {
  const uint64_t below = e.body.at("below_generation").get<uint64_t>();
  const int64_t grace_ms =
      std::clamp<int64_t>(e.body.value("grace_ms", kTrainerStopGraceMs), 0, kTrainerStopGraceMs);
  spdlog::info("stopping job {} trainers of generations below {} (grace {} ms)", e.job_id, below,
               grace_ms);
  supervisor_.Terminate(e.job_id, below, grace_ms);
  std::erase_if(pending_, [&](const PendingStart& p) {
    return p.job_id == e.job_id && p.generation < below;
  });
}

void WorkerDaemon::StartPending() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (supervisor_.Count(it->job_id, it->generation) > 0) {  // still stopping
      ++it;
      continue;
    }
    for (const auto& r : it->body.at("ranks")) {
      const int rank = r.get<int>();
      const TrainerKey key{it->job_id, it->generation, rank};
      if (started_.count(key)) continue;
      started_.insert(key);
      // Two jobs on one host never share a GPU: each rank takes a slot no one holds.
      Status s = StartRank(*it, rank, FreeDevice());
      if (!s.ok()) {
        spdlog::error("job {} rank {}: {}", it->job_id, rank, s.message());
        trainers_[key] = {0, false, kExitFailure, 0, "could not start: " + s.message()};
        new_exits_.push_back(key);
      }
    }
    it = pending_.erase(it);
  }
}

int WorkerDaemon::FreeDevice() const {
  std::vector<bool> held(static_cast<size_t>(std::max<int64_t>(opts_.devices, 0)), false);
  for (const auto& [key, t] : trainers_) {
    if (t.running && t.device >= 0 && t.device < static_cast<int>(held.size()))
      held[t.device] = true;
  }
  for (size_t d = 0; d < held.size(); ++d)
    if (!held[d]) return static_cast<int>(d);
  return -1;
}

std::string WorkerDaemon::LogPath(const std::string& job_id, int rank) const {
  return opts_.state_dir + "/logs/" + job_id + "/rank-" + std::to_string(rank) + ".log";
}

Status WorkerDaemon::StartRank(const PendingStart& p, int rank, int device) {
  const nlohmann::json& b = p.body;
  const std::string job_dir = opts_.state_dir + "/jobs/" + p.job_id;
  const std::string spec_path = job_dir + "/gen-" + std::to_string(p.generation) + ".yaml";
  std::error_code ec;
  fs::create_directories(job_dir, ec);
  fs::create_directories(opts_.state_dir + "/logs/" + p.job_id, ec);
  if (!fs::exists(spec_path)) {
    std::ofstream out(spec_path, std::ios::trunc);
    out << b.at("spec_yaml").get<std::string>();
    if (!out) return Status::IOError("cannot write " + spec_path);
  }
  std::vector<std::string> argv = {opts_.trainer_program,
                                   "train",
                                   spec_path,
                                   "--run-dir",
                                   b.at("run_dir").get<std::string>(),
                                   "--rank",
                                   std::to_string(rank),
                                   "--world",
                                   std::to_string(b.at("world").get<int64_t>()),
                                   "--no-progress",
                                   "--coordinator",
                                   opts_.coordinator,
                                   "--keys",
                                   opts_.keys_dir,
                                   "--job",
                                   p.job_id,
                                   "--generation",
                                   std::to_string(p.generation),
                                   "--data-host",
                                   opts_.data_host};
  if (device >= 0) {
    argv.insert(argv.end(), {"--device", std::to_string(device)});
  } else {  // every slot held (a trainer still stopping): the trainer picks rank mod GPUs
    spdlog::warn("job {} rank {}: no free device slot of {}", p.job_id, rank, opts_.devices);
  }
  const std::string spec_dir = b.value("spec_dir", std::string());
  if (!spec_dir.empty()) argv.insert(argv.end(), {"--spec-dir", spec_dir});
  if (b.value("resume", false)) argv.push_back("--resume");
  const int64_t restore = b.value("restore_step", int64_t(-1));
  if (restore > 0) argv.insert(argv.end(), {"--restore-step", std::to_string(restore)});
  const int64_t dp_timeout = b.value("data_plane_timeout_ms", int64_t(0));
  if (dp_timeout > 0)
    argv.insert(argv.end(), {"--data-plane-timeout-ms", std::to_string(dp_timeout)});
  const int64_t steps = b.value("steps", int64_t(0));
  if (steps > 0) argv.insert(argv.end(), {"--steps", std::to_string(steps)});
  const std::string log = LogPath(p.job_id, rank);
  {
    std::ofstream(log, std::ios::app) << "==== moerun-worker " << opts_.id << ": generation "
                                      << p.generation << " rank " << rank << " starting\n";
  }
  auto pid = supervisor_.Start({p.job_id, p.generation, rank, argv, log});
  if (!pid.ok()) return pid.status();
  trainers_[{p.job_id, p.generation, rank}] = {pid.value(), true, -1, 0, "", device};
  spdlog::info("job {} generation {} rank {}: started pid {} on device {}", p.job_id, p.generation,
               rank, pid.value(), device);
  return Status::OK();
}

void WorkerDaemon::OnLogQuery(const Envelope& e) {
  const std::string request_id = e.body.at("request_id").get<std::string>();
  const int rank = e.body.at("rank").get<int>();
  if (!SafeJobId(e.job_id)) {
    Send(MessageType::kError, e.job_id, 0, {{"request_id", request_id}, {"error", "bad job id"}});
    return;
  }
  const std::string path = LogPath(e.job_id, rank);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    Send(MessageType::kError, e.job_id, 0,
         {{"request_id", request_id},
          {"error", "worker " + opts_.id + " has no log for rank " + std::to_string(rank) +
                        " of job " + e.job_id}});
    return;
  }
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  int64_t offset = std::clamp<int64_t>(e.body.value("offset", int64_t(0)), 0, size);
  const int64_t max_bytes =
      std::clamp<int64_t>(e.body.value("max_bytes", int64_t(kLogChunkBytes)), 0, kLogChunkBytes);
  std::string data(size_t(std::min(max_bytes, size - offset)), '\0');
  in.seekg(offset);
  in.read(data.data(), std::streamsize(data.size()));
  Send(MessageType::kReply, e.job_id, 0,
       {{"request_id", request_id},
        {"data", data},
        {"offset", offset},
        {"next_offset", offset + int64_t(data.size())},
        {"size", size},
        {"worker", opts_.id}});
}

}  // namespace moerun::worker
