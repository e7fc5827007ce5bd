// WorkerRegistry: the worker daemons the coordinator knows (docs/architecture.md §6). A daemon
// joins with its first Register or Heartbeat (a restarted coordinator re-learns daemons from their
// next heartbeat), beats with every message, and is declared dead by CheckDead() once silent for
// longer than the heartbeat timeout. A dead daemon that beats again is alive again. Time comes
// from the injected clock; not thread-safe (the coordinator's loop owns it).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/heartbeat_tracker.h"
#include "common/status.h"

namespace moerun::coordinator {

inline constexpr int kWorkerRecordVersion = 1;

struct WorkerInfo {
  std::string id;         // the daemon's --id: unique in the cluster
  std::string host;       // host name, for people
  int64_t devices = 0;    // trainer slots
  std::string backend;    // "cpu" | "cuda"
  std::string data_host;  // where its trainers bind their data plane
  int64_t pid = 0;
  // "host:state dir": a daemon relaunched on it is this daemon; another daemon claiming the id
  // from elsewhere while this one is alive is refused. "" from daemons that do not say.
  std::string home;
  // The ZeroMQ routing id it connects with ("worker:<id>#<hash of home>"); messages to the
  // daemon go there. "" in records of older daemons: "worker:<id>".
  std::string route;
  bool alive = true;
  // Heard from since this coordinator started (a daemon restored from the store gets no work
  // until it speaks).
  bool heard = false;

  // Same registration (what a restart of the daemon may change).
  bool SameAs(const WorkerInfo& o) const {
    return host == o.host && devices == o.devices && backend == o.backend &&
           data_host == o.data_host && pid == o.pid && home == o.home && route == o.route;
  }
  nlohmann::json ToJson() const;
  static Result<WorkerInfo> FromJson(const nlohmann::json& j);
};

class WorkerRegistry {
 public:
  WorkerRegistry(const Clock* clock, int64_t heartbeat_timeout_ms);

  // Adds or updates the daemon and counts as a heartbeat. Returns true when the record is new
  // or changed (the caller persists it) or the daemon comes back from the dead.
  bool Upsert(const WorkerInfo& info);
  // Known from the store after a restart: alive until it stays silent for a timeout.
  void Restore(const WorkerInfo& info);
  // Ids of daemons silent for longer than the timeout; they are marked dead.
  std::vector<std::string> CheckDead();
  // Forgets a daemon (removed by an admin, or dead for long).
  void Remove(const std::string& id);
  // Ids of daemons dead (silent) for at least `ms`.
  std::vector<std::string> DeadFor(int64_t ms) const;

  const WorkerInfo* Find(const std::string& id) const;
  std::vector<WorkerInfo> All() const;
  // Milliseconds since the daemon's last message; -1 when dead or unknown.
  int64_t HeartbeatAgeMs(const std::string& id) const;
  int64_t timeout_ms() const { return timeout_ms_; }

 private:
  const Clock* clock_;
  int64_t timeout_ms_;
  std::vector<std::string> dead_;  // filled by the tracker's callback
  HeartbeatTracker tracker_;
  std::map<std::string, WorkerInfo> workers_;
  std::map<std::string, int64_t> dead_since_ms_;  // when CheckDead found each dead
};

}  // namespace moerun::coordinator
