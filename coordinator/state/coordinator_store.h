// CoordinatorStore: the coordinator's durable state in one RocksDB (docs/architecture.md §1, §5,
// §7), so a coordinator killed with SIGKILL reloads every job on restart.
//   job/<id>                   JobState (phase, generation, restarts, events)
//   spec/<id>                  the job's YAML, as submitted
//   metric/<id>/<step:12>      one step report's scalars (older ones thinned: metric_retention.h)
//   load/<id>/<layer>/<step:12>  tokens per expert of one MoE layer at that step (thinned alike),
//                              apart so reading curves never parses the load of every layer
//   manifest/<id>/<step:12>    a committed checkpoint manifest: present means committed
//   run/<id>                   a job's run: placement, rendezvous table, rank exits, progress
//   worker/<id>                a daemon's registration (host, devices, backend)
//   meta/job_sequence          the last job sequence number handed out
// Every value is framed as  u16 format version | u32 CRC32C of the payload | payload (JSON
// or text), and is refused with Corruption (naming the key) when the version is unknown or
// the CRC does not match. Writes that commit something (job state, manifests) are fsynced.
// Thread-safe (RocksDB is).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/jobs/job_state.h"

namespace rocksdb {
class DB;
}

namespace moerun::coordinator {

inline constexpr uint16_t kStoreValueVersion = 1;

class CoordinatorStore {
 public:
  static Result<std::unique_ptr<CoordinatorStore>> Open(const std::string& dir);
  ~CoordinatorStore();

  Status PutJob(const JobState& job);
  Status PutSpec(const std::string& job_id, const std::string& yaml);
  Result<std::string> GetSpec(const std::string& job_id) const;
  // Every stored job, in id order. A record that cannot be read fails the call (naming it).
  Result<std::vector<JobState>> LoadJobs() const;

  // Documents beside jobs, keyed <kind>/<id> ("run", "worker").
  Status PutDocument(const std::string& kind, const std::string& id, const nlohmann::json& doc,
                     bool sync);
  Result<std::vector<std::pair<std::string, nlohmann::json>>> LoadDocuments(
      const std::string& kind) const;
  Status DeleteDocument(const std::string& kind, const std::string& id);
  // 1, 2, 3, ...: durable, so a restarted coordinator never reuses a job id.
  Result<int64_t> NextJobSequence();

  // One step: the report's scalars, and per MoE layer (its name) the tokens of each expert.
  Status PutMetric(const std::string& job_id, int64_t step, const nlohmann::json& report,
                   const std::map<std::string, std::vector<int64_t>>& expert_load = {});
  // The report of the highest step stored (NotFound when there is none).
  Result<nlohmann::json> LastMetric(const std::string& job_id) const;
  // Deletes the reports KeepMetricStep() no longer keeps once `newest` is stored; returns
  // how many went. Reads keys only, so it costs one key scan of the job's reports.
  // `layers`: the job's MoE layers, whose load records go with the step's report.
  Result<int64_t> ThinMetrics(const std::string& job_id, int64_t newest,
                              const std::vector<std::string>& layers = {});
  // Deletes the reports (and their layers' load) of steps after `step`: a restart resumes
  // from a checkpoint, and the steps after it will be trained and reported again.
  Status DeleteMetricsAfter(const std::string& job_id, int64_t step,
                            const std::vector<std::string>& layers);
  // One layer's load at steps > since_step, ascending, at most `limit` steps.
  struct LoadSeries {
    std::vector<int64_t> steps;
    std::vector<std::vector<int64_t>> load;  // load[i][e]: tokens of expert e at steps[i]
  };
  Result<LoadSeries> ExpertLoad(const std::string& job_id, const std::string& layer,
                                int64_t since_step, size_t limit) const;
  // Reports with step > since_step, ascending, at most `limit`.
  Result<std::vector<nlohmann::json>> Metrics(const std::string& job_id, int64_t since_step,
                                              size_t limit) const;

  // The commit point of a checkpoint step (two-phase commit, docs/architecture.md §7).
  Status CommitManifest(const std::string& job_id, int64_t step, const nlohmann::json& manifest);
  Result<std::vector<int64_t>> CommittedSteps(const std::string& job_id) const;
  Result<nlohmann::json> Manifest(const std::string& job_id, int64_t step) const;
  Status DeleteManifest(const std::string& job_id, int64_t step);

 private:
  explicit CoordinatorStore(rocksdb::DB* db);
  Status Put(const std::string& key, const std::string& payload, bool sync);
  Result<std::string> Get(const std::string& key) const;
  // Deletes the reports (and their layers' load) of steps >= from_step that `drop` selects;
  // returns how many. Reads keys only.
  Result<int64_t> DeleteMetricSteps(const std::string& job_id, int64_t from_step,
                                    const std::vector<std::string>& layers,
                                    const std::function<bool(int64_t)>& drop);
  // Keys under `prefix` (in order) with their verified payloads.
  Result<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) const;

  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace moerun::coordinator
