#include "coordinator/service/job_run.h"

#include <algorithm>

namespace moerun::coordinator {

namespace {

// The newest step every rank holds, from each rank's oldest and newest: the oldest newest,
// provided it is newer than every rank's oldest (the next write recycles the oldest, and a
// rank's report lags its writes by up to one).
int64_t HeldByEveryRank(const std::vector<RankRun>& ranks, int64_t RankRun::*oldest_of,
                        int64_t RankRun::*newest_of) {
  if (ranks.empty()) return 0;
  int64_t newest = INT64_MAX, oldest = 0;
  for (const auto& r : ranks) {
    if (r.*newest_of <= 0) return 0;
    newest = std::min(newest, r.*newest_of);
    oldest = std::max(oldest, r.*oldest_of);
  }
  return newest > oldest ? newest : 0;
}

}  // namespace

int64_t JobRun::MemoryCommitted() const {
  return HeldByEveryRank(ranks, &RankRun::memory_oldest, &RankRun::memory_newest);
}

int64_t JobRun::ReplicaCommitted() const {
  // A rank reports a pinned step only once it holds the copy it keeps for its partner too.
  return HeldByEveryRank(ranks, &RankRun::replica_oldest, &RankRun::replica_newest);
}

nlohmann::json JobRun::ToRecord() const {
  nlohmann::json ranks_j = nlohmann::json::array();
  for (const auto& r : ranks) {
    ranks_j.push_back({{"worker", r.worker},
                       {"pid", r.pid},
                       {"exited", r.exited},
                       {"exit_code", r.exit_code},
                       {"signal", r.signal},
                       {"exit_text", r.exit_text}});
  }
  return {{"version", kJobRunRecordVersion},
          {"sequence", sequence},
          {"run_dir", run_dir},
          {"spec_dir", spec_dir},
          {"steps_override", steps_override},
          {"resume", resume},
          {"submitted_ms", submitted_ms},
          {"ranks", ranks_j},
          {"table", table},
          {"started_generation", started_generation},
          {"nccl_unique_id", nccl_unique_id},
          {"data_plane_public", data_plane_public},
          {"data_plane_secret", data_plane_secret},
          {"data_plane_generation", data_plane_generation},
          {"restore_step", restore_step},
          {"restore_from_memory", restore_from_memory},
          {"replica_to", replica_to},
          {"replica_fetch", replica_fetch},
          {"committed_step", committed_step},
          {"lost_steps", lost_steps},
          {"generation_started_ms", generation_started_ms},
          {"progress", progress},
          {"held_out", held_out},
          {"first_step_ms", first_step_ms},
          {"first_step", first_step}};
}

Status JobRun::FromRecord(const nlohmann::json& j) {
  if (!j.is_object() || j.value("version", 0) != kJobRunRecordVersion) {
    return Status::Corruption("run record: unknown format version (this build reads " +
                              std::to_string(kJobRunRecordVersion) + ")");
  }
  try {
    sequence = j.at("sequence").get<int64_t>();
    run_dir = j.at("run_dir").get<std::string>();
    spec_dir = j.at("spec_dir").get<std::string>();
    steps_override = j.at("steps_override").get<int64_t>();
    resume = j.at("resume").get<bool>();
    submitted_ms = j.at("submitted_ms").get<int64_t>();
    ranks.clear();
    for (const auto& r : j.at("ranks")) {
      RankRun rr;
      rr.worker = r.at("worker").get<std::string>();
      rr.pid = r.at("pid").get<int64_t>();
      rr.exited = r.at("exited").get<bool>();
      rr.exit_code = r.at("exit_code").get<int>();
      rr.signal = r.at("signal").get<int>();
      rr.exit_text = r.at("exit_text").get<std::string>();
      ranks.push_back(rr);
    }
    table = j.at("table").get<std::vector<std::string>>();
    started_generation = j.at("started_generation").get<uint64_t>();
    nccl_unique_id = j.at("nccl_unique_id").get<std::string>();
    data_plane_public = j.value("data_plane_public", std::string());  // absent before keys
    data_plane_secret = j.value("data_plane_secret", std::string());
    data_plane_generation = j.value("data_plane_generation", uint64_t(0));
    restore_step = j.at("restore_step").get<int64_t>();
    restore_from_memory = j.value("restore_from_memory", false);  // absent before memory
    // Absent before replicas; a list that does not fit the ranks counts as none.
    replica_to = j.value("replica_to", std::vector<int>());
    replica_fetch = j.value("replica_fetch", std::vector<int>());
    if (replica_to.size() != ranks.size()) replica_to.clear();
    if (replica_fetch.size() != ranks.size()) replica_fetch.clear();
    committed_step = j.at("committed_step").get<int64_t>();
    lost_steps = j.at("lost_steps").get<int64_t>();
    generation_started_ms = j.at("generation_started_ms").get<int64_t>();
    progress = j.at("progress");
    held_out = j.value("held_out", nlohmann::json::object());  // absent in older records
    first_step_ms = j.at("first_step_ms").get<int64_t>();
    first_step = j.at("first_step").get<int64_t>();
    return Status::OK();
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("run record: ") + e.what());
  }
}

}  // namespace moerun::coordinator
