#include "coordinator/membership/worker_registry.h"

namespace moerun::coordinator {

nlohmann::json WorkerInfo::ToJson() const {
  return {{"version", kWorkerRecordVersion},
          {"id", id},
          {"host", host},
          {"devices", devices},
          {"backend", backend},
          {"data_host", data_host},
          {"pid", pid},
          {"home", home},
          {"route", route}};
}

Result<WorkerInfo> WorkerInfo::FromJson(const nlohmann::json& j) {
  if (!j.is_object() || j.value("version", 0) != kWorkerRecordVersion) {
    return Status::Corruption("worker record: unknown format version (this build reads " +
                              std::to_string(kWorkerRecordVersion) + ")");
  }
  try {
    WorkerInfo w;
    w.id = j.at("id").get<std::string>();
    w.host = j.at("host").get<std::string>();
    w.devices = j.at("devices").get<int64_t>();
    w.backend = j.at("backend").get<std::string>();
    w.data_host = j.at("data_host").get<std::string>();
    w.pid = j.at("pid").get<int64_t>();
    w.home = j.value("home", std::string());  // absent in records of older coordinators
    w.route = j.value("route", std::string());
    return w;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("worker record: ") + e.what());
  }
}

WorkerRegistry::WorkerRegistry(const Clock* clock, int64_t heartbeat_timeout_ms)
    : clock_(clock),
      timeout_ms_(heartbeat_timeout_ms),
      tracker_(clock, heartbeat_timeout_ms,
               [this](const std::string& id, int64_t) { dead_.push_back(id); }) {}

bool WorkerRegistry::Upsert(const WorkerInfo& info) {
  tracker_.Beat(info.id);
  dead_since_ms_.erase(info.id);
  auto it = workers_.find(info.id);
  if (it == workers_.end()) {
    workers_[info.id] = info;
    workers_[info.id].alive = true;
    workers_[info.id].heard = true;
    return true;
  }
  const bool changed = !it->second.SameAs(info) || !it->second.alive;
  it->second = info;
  it->second.alive = true;
  it->second.heard = true;
  return changed;
}

void WorkerRegistry::Restore(const WorkerInfo& info) {
  workers_[info.id] = info;
  workers_[info.id].alive = true;
  workers_[info.id].heard = false;
  tracker_.Beat(info.id);
}

std::vector<std::string> WorkerRegistry::CheckDead() {
  dead_.clear();
  tracker_.Check();
  for (const auto& id : dead_) {
    auto it = workers_.find(id);
    if (it != workers_.end()) it->second.alive = false;
    dead_since_ms_[id] = clock_->NowMs();
  }
  return dead_;
}

void WorkerRegistry::Remove(const std::string& id) {
  workers_.erase(id);
  dead_since_ms_.erase(id);
  tracker_.Forget(id);
}

std::vector<std::string> WorkerRegistry::DeadFor(int64_t ms) const {
  std::vector<std::string> out;
  for (const auto& [id, w] : workers_) {
    auto since = dead_since_ms_.find(id);
    if (!w.alive && since != dead_since_ms_.end() && clock_->NowMs() - since->second >= ms)
      out.push_back(id);
  }
  return out;
}

const WorkerInfo* WorkerRegistry::Find(const std::string& id) const {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<WorkerInfo> WorkerRegistry::All() const {
  std::vector<WorkerInfo> out;
  for (const auto& [id, w] : workers_) out.push_back(w);
  return out;
}

int64_t WorkerRegistry::HeartbeatAgeMs(const std::string& id) const { return tracker_.AgeMs(id); }

}  // namespace moerun::coordinator
