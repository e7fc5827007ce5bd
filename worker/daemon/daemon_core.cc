#include "worker/daemon/daemon_core.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "common/timeouts.h"

namespace moerun::worker {

bool SafeJobId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

DaemonCore::DaemonCore(DaemonIdentity identity, const Clock* clock)
    : identity_(std::move(identity)), clock_(clock), last_answer_ms_(clock->NowMs()) {}

size_t DaemonCore::running() const {
  return size_t(std::count_if(trainers_.begin(), trainers_.end(),
                              [](const auto& kv) { return kv.second.running; }));
}

size_t DaemonCore::unacknowledged() const { return trainers_.size() - running(); }

std::set<std::string> DaemonCore::jobs() const {
  std::set<std::string> out;
  for (const auto& [key, t] : trainers_) out.insert(std::get<0>(key));
  return out;
}

void DaemonCore::Send(MessageType type, const std::string& job_id, uint64_t generation,
                      nlohmann::json body, DaemonActions* out) const {
  out->sends.push_back({type, generation, job_id, "worker:" + identity_.id, std::move(body)});
}

nlohmann::json DaemonCore::TrainerJson(const Key& key, const Trainer& t) const {
  return {{"job", std::get<0>(key)},  {"generation", std::get<1>(key)},
          {"rank", std::get<2>(key)}, {"pid", t.pid},
          {"running", t.running},     {"exit_code", t.exit_code},
          {"signal", t.signal},       {"text", t.text}};
}

nlohmann::json DaemonCore::Heartbeat(int64_t seq) const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [key, t] : trainers_) {
    if (t.running && t.pid == 0) continue;  // a start not carried out yet: nothing to report
    list.push_back(TrainerJson(key, t));
  }
  return {{"host", identity_.host},
          {"devices", identity_.devices},
          {"backend", identity_.backend},
          {"data_host", identity_.data_host},
          {"pid", identity_.pid},
          {"home", identity_.home},
          {"seq", seq},
          {"trainers", list},
          {"memory_jobs", memory_jobs_}};
}

Envelope DaemonCore::HeartbeatNow() {
  return {MessageType::kHeartbeat, 0, "", "worker:" + identity_.id, Heartbeat(++seq_)};
}

DaemonActions DaemonCore::OnEnvelope(const Envelope& e) {
  DaemonActions out;
  last_answer_ms_ = clock_->NowMs();
  if (away_) {
    out.notes.push_back("the coordinator answers again");
    away_ = false;
  }
  switch (e.type) {
    case MessageType::kRegistered:
    case MessageType::kReply: {
      auto b = DaemonReplyBody::FromJson(e.body, ToString(e.type));
      if (!b.ok()) {
        out.warnings.push_back("dropped a message: " + b.status().message());
        break;
      }
      if (e.type == MessageType::kRegistered) {
        if (!registered_) out.notes.push_back("registered with the coordinator");
        registered_ = true;
        if (b->heartbeat_interval_ms > 0) {
          heartbeat_interval_ms_ = std::max<int64_t>(10, b->heartbeat_interval_ms);
          // The next beat at the interval the coordinator asked for, not the one before it.
          next_beat_ms_ = std::min(next_beat_ms_, last_answer_ms_ + heartbeat_interval_ms_);
        }
        lease_ms_ = b->heartbeat_timeout_ms;
      }
      OnAcked(b->acked);
      break;
    }
    case MessageType::kStartTrainers:
      OnStart(e, &out);
      break;
    case MessageType::kStopTrainers:
      OnStop(e, &out);
      break;
    case MessageType::kQuery: {
      if (e.body.is_object() && e.body.value("what", "") == "flight") {
        BodyReader r(e.body, "Query");
        const std::string request_id = r.String("request_id", "");
        if (!SafeJobId(e.job_id) || request_id.empty()) {
          out.warnings.push_back("dropped a flight recorder request for job '" + e.job_id + "'");
        } else {
          out.flights.push_back({e.job_id, e.generation, request_id});
        }
        break;
      }
      auto b = LogRequestBody::FromJson(e.body);
      if (!b.ok()) {
        out.warnings.push_back("dropped a message: " + b.status().message());
      } else if (!SafeJobId(e.job_id)) {
        Send(MessageType::kError, e.job_id, 0,
             {{"request_id", b->request_id}, {"error", "bad job id"}}, &out);
      } else {
        out.logs.push_back({e.job_id, b.value()});
      }
      break;
    }
    case MessageType::kError: {
      BodyReader r(e.body, "Error");
      const std::string why = r.String("error", "?");
      if (e.body.is_object() && e.body.value("duplicate_id", false)) {
        out.fatal = "the coordinator refused this daemon: " + why;
      } else {
        out.warnings.push_back("the coordinator says: " + why);
      }
      break;
    }
    default:
      out.warnings.push_back("ignored " + std::string(ToString(e.type)) + " from the coordinator");
  }
  return out;
}

DaemonActions DaemonCore::OnLink(const LinkEvent& e) {
  DaemonActions out;
  const int64_t now = clock_->NowMs();
  switch (e.kind) {
    case LinkEvent::Kind::kUp:
      next_beat_ms_ = now;  // at once: the coordinator may be counting this daemon's silence
      key_refused_ = false;
      break;
    case LinkEvent::Kind::kRefused:
      last_refused_ms_ = now;
      break;
    case LinkEvent::Kind::kAuthFailed:
      if (!key_refused_) {
        out.warnings.push_back(
            "the coordinator refused this daemon's key (CURVE status " + std::to_string(e.detail) +
            "): add client.key from its --keys directory to the coordinator's authorized_keys");
      }
      key_refused_ = true;
      break;
    case LinkEvent::Kind::kHandshakeFailed:
      if (!key_refused_) {
        out.warnings.push_back("the handshake with the coordinator failed (libzmq event value " +
                               std::to_string(e.detail) +
                               "): is coordinator.key its current public key?");
      }
      key_refused_ = true;
      break;
    case LinkEvent::Kind::kDown:
      break;
  }
  return out;
}

int64_t DaemonCore::LeaseSilenceMs(int64_t now) const {
  int64_t since = last_answer_ms_;
  if (last_refused_ms_ > since) since = std::min(last_refused_ms_, last_answer_ms_ + lease_ms_);
  return now - since;
}

void DaemonCore::OnAcked(const std::vector<TrainerAck>& acked) {
  for (const TrainerAck& a : acked) {
    auto it = trainers_.find({a.job, a.generation, a.rank});
    if (it != trainers_.end() && !it->second.running) trainers_.erase(it);
  }
}

void DaemonCore::OnStart(const Envelope& e, DaemonActions* out) {
  if (!SafeJobId(e.job_id) || e.generation == 0) {
    out->warnings.push_back("ignored a start for job '" + e.job_id + "' generation " +
                            std::to_string(e.generation));
    return;
  }
  auto how = StartTrainersBody::FromJson(e.body);
  if (!how.ok()) {
    out->warnings.push_back("dropped a message: " + how.status().message());
    return;
  }
  // Fencing: older generations of the job stop before this one starts.
  out->stops.push_back({e.job_id, e.generation, kFenceGraceMs,
                        "stopped by its daemon: generation " + std::to_string(e.generation) +
                            " of the job starts here",
                        false});
  std::erase_if(started_, [&](const Key& k) {
    return std::get<0>(k) == e.job_id && std::get<1>(k) < e.generation;
  });
  for (const auto& p : pending_) {
    if (p.job_id == e.job_id && p.generation == e.generation) return;  // already waiting
  }
  pending_.push_back({e.job_id, e.generation, std::move(how.value())});
  StartPending(out);
}

void DaemonCore::OnStop(const Envelope& e, DaemonActions* out) {
  auto b = StopTrainersBody::FromJson(e.body);
  if (!b.ok()) {
    out->warnings.push_back("dropped a message: " + b.status().message());
    return;
  }
  const int64_t grace =
      b->grace_ms < 0 ? kTrainerStopGraceMs : std::min<int64_t>(b->grace_ms, kTrainerStopGraceMs);
  out->notes.push_back("stopping job " + e.job_id + " trainers of generations below " +
                       std::to_string(b->below_generation) + " (grace " + std::to_string(grace) +
                       " ms)");
  out->stops.push_back({e.job_id, b->below_generation, grace,
                        "stopped at the coordinator's request (generations below " +
                            std::to_string(b->below_generation) + ")",
                        b->below_generation == UINT64_MAX});
  std::erase_if(pending_, [&](const Pending& p) {
    return p.job_id == e.job_id && p.generation < b->below_generation;
  });
}

bool DaemonCore::Stopping(const std::string& job_id, uint64_t below_generation) const {
  for (const auto& [key, t] : trainers_)
    if (t.running && std::get<0>(key) == job_id && std::get<1>(key) < below_generation) return true;
  return false;
}

int DaemonCore::FreeDevice() const {
  std::vector<bool> held(size_t(std::max<int64_t>(identity_.devices, 0)), false);
  for (const auto& [key, t] : trainers_) {
    if (t.running && t.device >= 0 && t.device < int(held.size())) held[size_t(t.device)] = true;
  }
  for (size_t d = 0; d < held.size(); ++d)
    if (!held[d]) return int(d);
  return -1;
}

void DaemonCore::StartPending(DaemonActions* out) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (Stopping(it->job_id, it->generation)) {  // an older generation is still stopping
      ++it;
      continue;
    }
    for (int rank : it->how.ranks) {
      const Key key{it->job_id, it->generation, rank};
      if (started_.count(key)) continue;
      started_.insert(key);
      // Two jobs on one host never share a GPU: each rank takes a slot no one holds, held
      // from now on (the next rank sees it).
      const int device = FreeDevice();
      trainers_[key] = {0, true, -1, 0, "", device};
      out->starts.push_back({it->job_id, it->generation, rank, device, it->how});
    }
    it = pending_.erase(it);
  }
}

void DaemonCore::OnStarted(const std::string& job_id, uint64_t generation, int rank, int64_t pid) {
  trainers_[{job_id, generation, rank}].pid = pid;  // its device was taken with the Start
}

DaemonActions DaemonCore::OnTrainerEnd(const TrainerEnd& end) {
  DaemonActions out;
  const Key key{end.job_id, end.generation, end.rank};
  trainers_[key] = {end.pid, false, end.exit_code, end.signal, end.text, -1};
  new_ends_.push_back(key);
  out.notes.push_back("job " + end.job_id + " generation " + std::to_string(end.generation) +
                      " rank " + std::to_string(end.rank) + " (pid " + std::to_string(end.pid) +
                      ") " + end.text);
  return out;
}

DaemonActions DaemonCore::Tick() {
  DaemonActions out;
  const int64_t now = clock_->NowMs();
  if (!new_ends_.empty()) {  // at once; every heartbeat repeats them until acknowledged
    nlohmann::json list = nlohmann::json::array();
    for (const Key& key : new_ends_) {
      auto it = trainers_.find(key);
      if (it != trainers_.end()) list.push_back(TrainerJson(key, it->second));
    }
    new_ends_.clear();
    Send(MessageType::kTrainerExited, "", 0, {{"trainers", list}}, &out);
  }
  // Past the lease the coordinator counts this daemon dead: nothing new starts here until it
  // answers again.
  const int64_t silent = now - last_answer_ms_;
  const int64_t lease_silence = LeaseSilenceMs(now);
  const bool lease_over = lease_ms_ > 0 && lease_silence > lease_ms_;
  if (!lease_over) StartPending(&out);
  if (now >= next_beat_ms_) {
    out.sends.push_back({registered_ ? MessageType::kHeartbeat : MessageType::kRegister, 0, "",
                         "worker:" + identity_.id, Heartbeat(++seq_)});
    next_beat_ms_ = now + heartbeat_interval_ms_;
  }
  if (!away_ && silent > 3 * heartbeat_interval_ms_) {
    away_ = true;
    out.warnings.push_back("no answer from the coordinator for " + std::to_string(silent) +
                           " ms: reconnecting; trainers keep running");
  }
  // The lease: silent for the heartbeat timeout, the coordinator has declared this daemon
  // dead and restarts its ranks elsewhere. Its trainers must not go on beside the new
  // generation (a shared checkpoint shard has one writer), so they stop here.
  if (lease_over && !self_fenced_ && running() > 0) {
    self_fenced_ = true;
    const std::string why = "no answer from the coordinator for " + std::to_string(silent) +
                            " ms: the lease (heartbeat timeout " + std::to_string(lease_ms_) +
                            " ms) expired";
    out.warnings.push_back(why + ", stopping " + std::to_string(running()) +
                           " trainer(s), whose generation the coordinator has ended");
    for (const std::string& job : jobs())
      out.stops.push_back({job, UINT64_MAX, kFenceGraceMs, "stopped by its daemon: " + why, false});
  }
  if (lease_silence <= lease_ms_) self_fenced_ = false;
  return out;
}

}  // namespace moerun::worker
