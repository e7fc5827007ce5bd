#include "worker/daemon/worker_daemon.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/exit_codes.h"
#include "common/limits.h"
#include "common/service_notifier.h"
#include "common/timeouts.h"
#include "worker/comm/flight_recorder.h"

namespace moerun::worker {
namespace {

namespace fs = std::filesystem;

// Heads each start of a trainer in its log.
constexpr char kStartBanner[] = "==== moerun-worker ";

// The trainer's own account of its failure: the last "moerun train: ..." line its latest start
// wrote to its log (within the file's last 4 KiB), without the prefix and at most 400
// characters; empty when there is none.
std::string TrainerReason(const std::string& log_path) {
  constexpr std::streamoff kTail = 4096;
  constexpr size_t kMaxChars = 400;
  const std::string prefix = "moerun train: ";
  std::ifstream in(log_path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kTail));
  std::string line, found;
  while (std::getline(in, line)) {
    if (line.rfind(kStartBanner, 0) == 0) found.clear();  // an older start's words
    if (line.rfind(prefix, 0) == 0) found = line.substr(prefix.size());
  }
  if (found.size() > kMaxChars) found = found.substr(0, kMaxChars) + "...";
  return found;
}

// Removes a job's memory-snapshot slots (rank-<R>.<slot|pinned|replica>-<K>.mem) and then the
// directory if that left it empty: never anything else, whatever --memory-dir names.
void RemoveSnapshotDir(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> slots;
  for (const auto& f : fs::directory_iterator(dir, ec)) {
    const std::string name = f.path().filename().string();
    const bool kind = name.find(".slot-") != std::string::npos ||
                      name.find(".pinned-") != std::string::npos ||
                      name.find(".replica-") != std::string::npos;
    if (name.rfind("rank-", 0) == 0 && kind && f.path().extension() == ".mem")
      slots.push_back(f.path());
  }
  for (const auto& p : slots) fs::remove(p, ec);
  fs::remove(dir, ec);  // fails, harmlessly, unless empty
}

// One rank's part in the replicas of pinned memory snapshots, from the job's lists
// (StartTrainersBody; coordinator/scheduler/replica_partners.h): -1 and "" for none.
struct ReplicaRoles {
  int to = -1, from = -1, fetch = -1;
  std::string serve;  // the ranks it sends their copies to on a restore, "2,3"
};

ReplicaRoles RolesOf(int rank, const std::vector<int>& to, const std::vector<int>& fetch) {
  ReplicaRoles roles;
  if (size_t(rank) < to.size() && to[size_t(rank)] >= 0) {
    roles.to = to[size_t(rank)];
    for (size_t q = 0; q < to.size(); ++q)
      if (to[q] == rank) roles.from = int(q);
    if (roles.from < 0) roles.to = -1;  // not a ring the exchange can run on
  }
  if (size_t(rank) < fetch.size()) roles.fetch = fetch[size_t(rank)];
  for (size_t q = 0; q < fetch.size(); ++q) {
    if (fetch[q] != rank) continue;
    roles.serve += (roles.serve.empty() ? "" : ",") + std::to_string(q);
  }
  return roles;
}

}  // namespace

WorkerDaemon::WorkerDaemon(DaemonOptions opts)
    : opts_(std::move(opts)),
      core_({opts_.id, opts_.host, opts_.backend, opts_.data_host, opts_.devices, int64_t(getpid()),
             Home()},
            &clock_),
      supervisor_([this](const TrainerExit& e) {
        TrainerEnd end{e.job_id, e.generation, e.rank, e.pid, e.exit_code, e.signal, e.Describe()};
        // Why, where the admin looks (the job's event cause), not only in the trainer's log:
        // a refusal, a data-plane timeout or abort, a CUDA error, each as itself.
        if (e.signal == 0 && e.exit_code != kExitOk) {
          const std::string why = TrainerReason(LogPath(e.job_id, e.rank));
          if (!why.empty()) end.text += ": " + why;
        }
        Execute(core_.OnTrainerEnd(end));
      }) {}

WorkerDaemon::~WorkerDaemon() {
  // Here, not in the supervisor's destructor: its exit callback touches members that are
  // destroyed before it.
  for (const auto& j : core_.jobs()) supervisor_.StopJob(j, kShutdownGraceMs);
}

Result<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Create(DaemonOptions opts) {
  auto keys = LoadClientKeys(opts.keys_dir);
  if (!keys.ok()) return keys.status();
  if (access(opts.trainer_program.c_str(), X_OK) != 0) {
    return Status::NotFound("trainer program " + opts.trainer_program + " is not executable");
  }
  std::unique_ptr<WorkerDaemon> d(new WorkerDaemon(std::move(opts)));
  auto dealer = ConnectDealer(d->ctx_, keys.value(),
                              {d->opts_.coordinator, RoutingId(d->opts_.id, d->Home()),
                               /*immediate=*/true});
  if (!dealer.ok()) return dealer.status();
  d->dealer_ = std::move(dealer.value());
  auto link = ConnectionMonitor::Create(d->ctx_, *d->dealer_, "worker-" + std::to_string(getpid()));
  if (!link.ok()) return link.status();
  d->link_ = std::move(link.value());
  return d;
}

void WorkerDaemon::SendEnvelopeOrWarn(const Envelope& e) {
  auto sent = SendEnvelope(*dealer_, e);
  if (!sent.ok()) spdlog::warn("cannot send {}: {}", ToString(e.type), sent.status().message());
  // Not sent (no connection): the next heartbeat carries the same state.
}

int WorkerDaemon::Run(const std::atomic<bool>& stop) {
  spdlog::info("worker {} on {}: {} {} slots, coordinator {}", opts_.id, opts_.host, opts_.devices,
               opts_.backend, opts_.coordinator);
  // Under systemd (scripts/systemd/moerun-worker.service): ready once the loop runs, and a
  // watchdog ping each turn, so a daemon whose loop stops (frozen, deadlocked) is restarted.
  ServiceNotifier notifier;
  notifier.Ready("worker " + opts_.id + ", " + std::to_string(opts_.devices) + " slots");
  while (!stop.load() && fatal_.empty()) {
    notifier.Tick();
    for (const LinkEvent& e : link_->Poll()) Execute(core_.OnLink(e));
    auto msg = ReceiveEnvelope(*dealer_, supervisor_.Killing() ? kDaemonReapTickMs : kDaemonTickMs);
    if (!msg.ok()) {
      spdlog::warn("dropped a message from the coordinator: {}", msg.status().message());
    } else if (msg->has_value()) {
      Execute(core_.OnEnvelope(**msg));
    }
    // A trainer frozen as long as the coordinator lets a daemon be silent is dead too.
    supervisor_.set_frozen_timeout_ms(core_.lease_ms());
    supervisor_.Poll();  // exits reach the core through the supervisor's callback
    KeepStandbys();
    ListMemoryJobs();
    Execute(core_.Tick());
  }
  notifier.Stopping();
  spdlog::info("worker {} stopping: {} trainer(s) to stop", opts_.id, supervisor_.Running());
  for (const auto& j : core_.jobs()) supervisor_.StopJob(j);
  supervisor_.Poll();
  SendEnvelopeOrWarn(core_.HeartbeatNow());  // the exits, best effort
  // Stopped on purpose: no trainer of this daemon will restore from memory. (A daemon that
  // dies leaves them, for its trainers' restart on this host.)
  if (opts_.memory_dir.empty()) return fatal_.empty() ? kExitOk : kExitInvalidConfig;
  for (const auto& job : MemoryJobs()) RemoveSnapshotDir(opts_.memory_dir + "/" + job);
  std::error_code ec;
  fs::remove(opts_.memory_dir, ec);  // only when nothing else is in it
  return fatal_.empty() ? kExitOk : kExitInvalidConfig;
}

void WorkerDaemon::KeepStandbys() {
  if (int64_t(supervisor_.Standbys()) >= opts_.standby_trainers) return;
  if (clock_.NowMs() - last_trainer_start_ms_ < kStandbyRefillDelayMs) return;
  std::error_code ec;
  fs::create_directories(opts_.state_dir + "/logs", ec);
  // One per turn of the loop: a host's cores are shared with its trainers.
  Status started =
      supervisor_.StartStandby(opts_.trainer_program, opts_.state_dir + "/logs/standby.log");
  if (!started.ok()) {
    spdlog::warn("{}; trainers start cold", started.message());
    last_trainer_start_ms_ = clock_.NowMs();  // not again at once
  }
}

std::string WorkerDaemon::RoutingId(const std::string& id, const std::string& home) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the same on every build and host
  for (unsigned char c : home) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return "worker:" + id + "#" + hex;
}

void WorkerDaemon::Execute(const DaemonActions& a) {
  if (!a.fatal.empty() && fatal_.empty()) {
    fatal_ = a.fatal;
    spdlog::error("{}", fatal_);
  }
  for (const auto& note : a.notes) spdlog::info("{}", note);
  for (const auto& warning : a.warnings) spdlog::warn("{}", warning);
  for (const auto& s : a.stops) {
    supervisor_.Terminate(s.job_id, s.below_generation, s.grace_ms, s.cause);
    if (s.job_over && SafeJobId(s.job_id)) RemoveJobFiles(s.job_id);
  }
  for (const auto& s : a.starts) {
    Status st = StartRank(s);
    if (!st.ok()) {
      spdlog::error("job {} rank {}: {}", s.job_id, s.rank, st.message());
      Execute(core_.OnTrainerEnd({s.job_id, s.generation, s.rank, 0, kExitFailure, 0,
                                  "could not start: " + st.message()}));
    }
  }
  for (const auto& e : a.sends) SendEnvelopeOrWarn(e);
  for (const auto& log : a.logs) ServeLog(log);
  for (const auto& f : a.flights) ServeFlight(f);
}

std::vector<std::string> WorkerDaemon::MemoryJobs() const {
  std::vector<std::string> jobs;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(opts_.memory_dir, ec)) {
    const std::string name = d.path().filename().string();
    if (d.is_directory(ec) && SafeJobId(name)) jobs.push_back(name);
  }
  return jobs;
}

void WorkerDaemon::ListMemoryJobs() {
  const int64_t now = clock_.NowMs();
  if (opts_.memory_dir.empty() || now - memory_jobs_listed_ms_ < kMemoryJobsListMs) return;
  memory_jobs_listed_ms_ = now;
  std::vector<std::string> jobs = MemoryJobs();
  if (jobs.size() > kMaxMemoryJobsReported) jobs.resize(kMaxMemoryJobsReported);
  core_.set_memory_jobs(std::move(jobs));
}

std::vector<fs::path> WorkerDaemon::FlightFiles(const std::string& prefix) const {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(opts_.state_dir + "/trainers", ec)) {
    if (f.path().filename().string().rfind(prefix, 0) == 0 && f.path().extension() == ".flight")
      files.push_back(f.path());
  }
  return files;
}

void WorkerDaemon::RemoveJobFiles(const std::string& job_id) {
  // The coordinator ended the job here: its memory snapshots and flight recorders go (beat
  // files go with their trainers). A trainer still stopping cannot recreate the directory.
  if (!opts_.memory_dir.empty()) RemoveSnapshotDir(opts_.memory_dir + "/" + job_id);
  std::error_code ec;
  for (const auto& f : FlightFiles(job_id + ".g")) fs::remove(f, ec);
  // Key files of trainers that died before reading them.
  for (const auto& f : fs::directory_iterator(opts_.state_dir + "/trainers", ec)) {
    const std::string name = f.path().filename().string();
    if (name.rfind(job_id + ".g", 0) == 0 && f.path().extension() == ".key") fs::remove(f, ec);
  }
}

std::string WorkerDaemon::TrainerFilePrefix(const std::string& job_id, uint64_t generation,
                                            int rank) const {
  return opts_.state_dir + "/trainers/" + job_id + ".g" + std::to_string(generation) + ".r" +
         std::to_string(rank);
}

std::string WorkerDaemon::LogPath(const std::string& job_id, int rank) const {
  return opts_.state_dir + "/logs/" + job_id + "/rank-" + std::to_string(rank) + ".log";
}

Status WorkerDaemon::StartRank(const DaemonActions::Start& p) {
  const StartTrainersBody& b = p.how;
  const int rank = p.rank, device = p.device;
  const std::string job_dir = opts_.state_dir + "/jobs/" + p.job_id;
  const std::string spec_path = job_dir + "/gen-" + std::to_string(p.generation) + ".yaml";
  std::error_code ec;
  fs::create_directories(job_dir, ec);
  fs::create_directories(opts_.state_dir + "/logs/" + p.job_id, ec);
  if (!fs::exists(spec_path)) {
    std::ofstream out(spec_path, std::ios::trunc);
    out << b.spec_yaml;
    if (!out) return Status::IOError("cannot write " + spec_path);
  }
  std::vector<std::string> argv = {opts_.trainer_program,
                                   "train",
                                   spec_path,
                                   "--run-dir",
                                   b.run_dir,
                                   "--rank",
                                   std::to_string(rank),
                                   "--world",
                                   std::to_string(b.world),
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
  if (!b.spec_dir.empty()) argv.insert(argv.end(), {"--spec-dir", b.spec_dir});
  if (b.resume) argv.push_back("--resume");
  if (b.restore_step > 0)
    argv.insert(argv.end(), {"--restore-step", std::to_string(b.restore_step)});
  if (!opts_.memory_dir.empty()) {
    argv.insert(argv.end(), {"--memory-dir", opts_.memory_dir + "/" + p.job_id});
    if (b.restore_from_memory) argv.push_back("--restore-from-memory");
    // Replicas: whom this rank copies its pinned snapshots to, whose copies it keeps, and, on
    // a restore, whom it fetches its state from or sends a copy to.
    const ReplicaRoles roles = RolesOf(rank, b.replica_to, b.replica_fetch);
    if (roles.to >= 0) {
      argv.insert(argv.end(), {"--replica-to", std::to_string(roles.to), "--replica-from",
                               std::to_string(roles.from)});
    }
    if (roles.fetch >= 0)
      argv.insert(argv.end(), {"--fetch-replica-from", std::to_string(roles.fetch)});
    if (!roles.serve.empty()) argv.insert(argv.end(), {"--serve-replicas", roles.serve});
  }
  if (b.data_plane_timeout_ms > 0)
    argv.insert(argv.end(), {"--data-plane-timeout-ms", std::to_string(b.data_plane_timeout_ms)});
  if (b.steps > 0) argv.insert(argv.end(), {"--steps", std::to_string(b.steps)});
  // The trainer fences itself once this daemon's beat is older than the coordinator's
  // heartbeat timeout less one interval: before the coordinator restarts its rank elsewhere.
  // Its flight recorder lies beside the beat file, for the coordinator to ask about a hang.
  const std::string trainer_files = TrainerFilePrefix(p.job_id, p.generation, rank);
  fs::create_directories(opts_.state_dir + "/trainers", ec);
  argv.insert(argv.end(), {"--flight-recorder", trainer_files + ".flight"});
  if (!b.data_plane_secret.empty()) {
    // The key in a file only this user reads, not on the command line (/proc shows that to
    // everyone); the trainer removes it once read.
    const std::string key_path = trainer_files + ".key";
    const int fd = open(key_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const std::string text = b.data_plane_public + "\n" + b.data_plane_secret + "\n";
    const bool written = fd >= 0 && write(fd, text.data(), text.size()) == ssize_t(text.size());
    if (fd >= 0) close(fd);
    if (!written) return Status::IOError("cannot write the data-plane key file " + key_path);
    argv.insert(argv.end(), {"--data-plane-key", key_path});
  }
  std::string beat;
  if (core_.lease_ms() > 0) {
    beat = trainer_files + ".beat";
    const int64_t lease =
        std::max(core_.heartbeat_interval_ms(), core_.lease_ms() - core_.heartbeat_interval_ms());
    argv.insert(argv.end(), {"--daemon-beat", beat, "--daemon-lease-ms", std::to_string(lease)});
  }
  const std::string log = LogPath(p.job_id, rank);
  {
    std::ofstream(log, std::ios::app) << kStartBanner << opts_.id << ": generation " << p.generation
                                      << " rank " << rank << " starting\n";
  }
  bool warm = false;
  auto pid = supervisor_.Start({p.job_id, p.generation, rank, argv, log, beat}, &warm);
  last_trainer_start_ms_ = clock_.NowMs();
  if (!pid.ok()) return pid.status();
  core_.OnStarted(p.job_id, p.generation, rank, pid.value());
  spdlog::info("job {} generation {} rank {}: started pid {} on device {}{}", p.job_id,
               p.generation, rank, pid.value(), device, warm ? " (a warm standby)" : "");
  return Status::OK();
}

void WorkerDaemon::ServeLog(const DaemonActions::Log& log) {
  const LogRequestBody& q = log.request;
  const std::string path = LogPath(log.job_id, q.rank);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    SendEnvelopeOrWarn({MessageType::kError,
                        0,
                        log.job_id,
                        "worker:" + opts_.id,
                        {{"request_id", q.request_id},
                         {"error", "worker " + opts_.id + " has no log for rank " +
                                       std::to_string(q.rank) + " of job " + log.job_id}}});
    return;
  }
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  const int64_t offset = std::clamp<int64_t>(q.offset, 0, size);
  const int64_t chunk = int64_t(kLogChunkBytes);
  const int64_t max_bytes = q.max_bytes < 0 ? chunk : std::min(q.max_bytes, chunk);
  std::string data(size_t(std::min(max_bytes, size - offset)), '\0');
  in.seekg(offset);
  in.read(data.data(), std::streamsize(data.size()));
  SendEnvelopeOrWarn({MessageType::kReply,
                      0,
                      log.job_id,
                      "worker:" + opts_.id,
                      {{"request_id", q.request_id},
                       {"data", data},
                       {"offset", offset},
                       {"next_offset", offset + int64_t(data.size())},
                       {"size", size},
                       {"worker", opts_.id}}});
}

void WorkerDaemon::ServeFlight(const DaemonActions::Flight& f) {
  // This generation's recorder files, whether their trainers run, ended or were killed.
  nlohmann::json ranks = nlohmann::json::object(), problems = nlohmann::json::array();
  const int64_t now = comm::FlightRecorder::NowNs();
  for (const auto& path : FlightFiles(f.job_id + ".g" + std::to_string(f.generation) + ".r")) {
    auto contents = comm::FlightRecorder::Read(path.string(), kFlightEntriesReported);
    if (!contents.ok()) {
      problems.push_back(contents.status().message());
      continue;
    }
    nlohmann::json entries = nlohmann::json::array();
    for (const auto& e : contents->entries) entries.push_back(e.ToJson(now));
    ranks[std::to_string(contents->rank)] = entries;
  }
  SendEnvelopeOrWarn({MessageType::kReply,
                      f.generation,
                      f.job_id,
                      "worker:" + opts_.id,
                      {{"request_id", f.request_id},
                       {"worker", opts_.id},
                       {"ranks", ranks},
                       {"problems", problems}}});
}

}  // namespace moerun::worker
