#include "coordinator/state/coordinator_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "common/crc32c.h"
#include "coordinator/state/metric_retention.h"

namespace moerun::coordinator {
namespace {

std::string Step12(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012lld", static_cast<long long>(step));
  return buf;
}

// load/<job>/<layer>/<step:12>: one MoE layer's tokens per expert at a step.
std::string LoadKey(const std::string& job_id, const std::string& layer, int64_t step) {
  return "load/" + job_id + "/" + layer + "/" + Step12(step);
}

std::string Frame(const std::string& payload) {
  std::string out(6, '\0');
  const uint16_t v = kStoreValueVersion;
  const uint32_t crc = Crc32c(payload.data(), payload.size());
  std::memcpy(out.data(), &v, 2);
  std::memcpy(out.data() + 2, &crc, 4);
  return out + payload;
}

Result<std::string> Unframe(const std::string& key, const std::string& value) {
  if (value.size() < 6) return Status::Corruption("coordinator state " + key + ": truncated value");
  uint16_t v;
  uint32_t crc;
  std::memcpy(&v, value.data(), 2);
  std::memcpy(&crc, value.data() + 2, 4);
  if (v != kStoreValueVersion) {
    return Status::Corruption("coordinator state " + key + ": value format version " +
                              std::to_string(v) + "; this build reads " +
                              std::to_string(kStoreValueVersion));
  }
  std::string payload = value.substr(6);
  if (Crc32c(payload.data(), payload.size()) != crc)
    return Status::Corruption("coordinator state " + key + ": CRC32C mismatch");
  return payload;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  if (s.IsNotFound()) return Status::NotFound(what);
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

Result<nlohmann::json> ParseJson(const std::string& key, const std::string& payload) {
  auto j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded()) return Status::Corruption("coordinator state " + key + ": not JSON");
  return j;
}

}  // namespace

CoordinatorStore::CoordinatorStore(rocksdb::DB* db) : db_(db) {}
CoordinatorStore::~CoordinatorStore() = default;

Result<std::unique_ptr<CoordinatorStore>> CoordinatorStore::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  rocksdb::DB* db = nullptr;
  MOERUN_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(options, dir, &db), "coordinator state " + dir));
  return std::unique_ptr<CoordinatorStore>(new CoordinatorStore(db));
}

Status CoordinatorStore::Put(const std::string& key, const std::string& payload, bool sync) {
  rocksdb::WriteOptions w;
  w.sync = sync;
  return FromRocks(db_->Put(w, key, Frame(payload)), "coordinator state " + key);
}

Result<std::string> CoordinatorStore::Get(const std::string& key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return Status::NotFound("coordinator state " + key + ": not stored");
  MOERUN_RETURN_IF_ERROR(FromRocks(s, "coordinator state " + key));
  return Unframe(key, value);
}

Result<std::vector<std::pair<std::string, std::string>>> CoordinatorStore::Scan(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const std::string key = it->key().ToString();
    auto payload = Unframe(key, it->value().ToString());
    if (!payload.ok()) return payload.status();
    out.emplace_back(key, std::move(payload.value()));
  }
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "coordinator state scan " + prefix));
  return out;
}

Status CoordinatorStore::PutJob(const JobState& job) {
  return Put("job/" + job.job_id(), job.ToJson().dump(), true);
}

Status CoordinatorStore::PutSpec(const std::string& job_id, const std::string& yaml) {
  return Put("spec/" + job_id, yaml, true);
}

Result<std::string> CoordinatorStore::GetSpec(const std::string& job_id) const {
  return Get("spec/" + job_id);
}

Result<std::vector<JobState>> CoordinatorStore::LoadJobs() const {
  auto rows = Scan("job/");
  if (!rows.ok()) return rows.status();
  std::vector<JobState> jobs;
  for (const auto& [key, payload] : rows.value()) {
    auto j = ParseJson(key, payload);
    if (!j.ok()) return j.status();
    auto state = JobState::FromJson(j.value());
    if (!state.ok()) return state.status().WithContext(key);
    jobs.push_back(std::move(state.value()));
  }
  return jobs;
}

Status CoordinatorStore::PutDocument(const std::string& kind, const std::string& id,
                                     const nlohmann::json& doc, bool sync) {
  return Put(kind + "/" + id, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
             sync);
}

Status CoordinatorStore::DeleteDocument(const std::string& kind, const std::string& id) {
  rocksdb::WriteOptions w;
  w.sync = true;
  const std::string key = kind + "/" + id;
  return FromRocks(db_->Delete(w, key), "coordinator state " + key);
}

Result<std::vector<std::pair<std::string, nlohmann::json>>> CoordinatorStore::LoadDocuments(
    const std::string& kind) const {
  auto rows = Scan(kind + "/");
  if (!rows.ok()) return rows.status();
  std::vector<std::pair<std::string, nlohmann::json>> out;
  for (const auto& [key, payload] : rows.value()) {
    auto j = ParseJson(key, payload);
    if (!j.ok()) return j.status();
    out.emplace_back(key.substr(kind.size() + 1), std::move(j.value()));
  }
  return out;
}

Result<int64_t> CoordinatorStore::NextJobSequence() {
  const std::string key = "meta/job_sequence";
  int64_t last = 0;
  auto cur = Get(key);
  if (cur.ok()) {
    last = std::strtoll(cur->c_str(), nullptr, 10);
  } else if (cur.status().code() != Status::Code::kNotFound) {
    return cur.status();
  }
  MOERUN_RETURN_IF_ERROR(Put(key, std::to_string(last + 1), true));
  return last + 1;
}

Status CoordinatorStore::PutMetric(const std::string& job_id, int64_t step,
                                   const nlohmann::json& report,
                                   const std::map<std::string, std::vector<int64_t>>& expert_load) {
  rocksdb::WriteBatch batch;
  const std::string key = "metric/" + job_id + "/" + Step12(step);
  MOERUN_RETURN_IF_ERROR(FromRocks(batch.Put(key, Frame(report.dump())), key));
  for (const auto& [layer, counts] : expert_load) {
    const std::string k = LoadKey(job_id, layer, step);
    MOERUN_RETURN_IF_ERROR(FromRocks(batch.Put(k, Frame(nlohmann::json(counts).dump())), k));
  }
  return FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "coordinator state " + key);
}

Status CoordinatorStore::DeleteMetricsAfter(const std::string& job_id, int64_t step,
                                            const std::vector<std::string>& layers) {
  auto dropped = DeleteMetricSteps(job_id, step + 1, layers, [](int64_t) { return true; });
  return dropped.ok() ? Status::OK() : dropped.status();
}

Result<int64_t> CoordinatorStore::DeleteMetricSteps(const std::string& job_id, int64_t from_step,
                                                    const std::vector<std::string>& layers,
                                                    const std::function<bool(int64_t)>& drop) {
  const std::string prefix = "metric/" + job_id + "/";
  rocksdb::WriteBatch batch;
  int64_t dropped = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix + Step12(from_step)); it->Valid() && it->key().starts_with(prefix);
       it->Next()) {
    const std::string digits = it->key().ToString().substr(prefix.size());
    int64_t step = 0;
    try {
      step = std::stoll(digits);
    } catch (const std::exception&) {
      return Status::Corruption("coordinator state: metric key " + it->key().ToString() +
                                " has no step number");
    }
    if (!drop(step)) continue;
    MOERUN_RETURN_IF_ERROR(FromRocks(batch.Delete(it->key()), "deleting " + prefix));
    for (const auto& layer : layers) {
      MOERUN_RETURN_IF_ERROR(
          FromRocks(batch.Delete(LoadKey(job_id, layer, step)), "deleting " + prefix));
    }
    ++dropped;
  }
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "coordinator state scan " + prefix));
  if (dropped > 0) {
    MOERUN_RETURN_IF_ERROR(
        FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "deleting " + prefix));
  }
  return dropped;
}

Result<CoordinatorStore::LoadSeries> CoordinatorStore::ExpertLoad(const std::string& job_id,
                                                                  const std::string& layer,
                                                                  int64_t since_step,
                                                                  size_t limit) const {
  LoadSeries out;
  const std::string prefix = "load/" + job_id + "/" + layer + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix + Step12(since_step + 1));
       it->Valid() && it->key().starts_with(prefix) && out.steps.size() < limit; it->Next()) {
    const std::string key = it->key().ToString();
    auto payload = Unframe(key, it->value().ToString());
    if (!payload.ok()) return payload.status();
    auto j = ParseJson(key, payload.value());
    if (!j.ok()) return j.status();
    try {
      out.load.push_back(j.value().get<std::vector<int64_t>>());
      out.steps.push_back(std::stoll(key.substr(prefix.size())));
    } catch (const std::exception& e) {
      return Status::Corruption("coordinator state " + key + ": not a step's expert load (" +
                                e.what() + ")");
    }
  }
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "coordinator state scan " + prefix));
  return out;
}

Result<nlohmann::json> CoordinatorStore::LastMetric(const std::string& job_id) const {
  const std::string prefix = "metric/" + job_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->SeekForPrev(prefix + "999999999999");
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "coordinator state scan " + prefix));
  if (!it->Valid() || !it->key().starts_with(prefix))
    return Status::NotFound("no step reports of job " + job_id);
  const std::string key = it->key().ToString();
  auto payload = Unframe(key, it->value().ToString());
  if (!payload.ok()) return payload.status();
  return ParseJson(key, payload.value());
}

Result<int64_t> CoordinatorStore::ThinMetrics(const std::string& job_id, int64_t newest,
                                              const std::vector<std::string>& layers) {
  return DeleteMetricSteps(job_id, 0, layers, [newest](int64_t step) {
    return step < newest && !KeepMetricStep(step, newest);
  });
}

Result<std::vector<nlohmann::json>> CoordinatorStore::Metrics(const std::string& job_id,
                                                              int64_t since_step,
                                                              size_t limit) const {
  std::vector<nlohmann::json> out;
  const std::string prefix = "metric/" + job_id + "/";
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix + Step12(since_step + 1));
       it->Valid() && it->key().starts_with(prefix) && out.size() < limit; it->Next()) {
    const std::string key = it->key().ToString();
    auto payload = Unframe(key, it->value().ToString());
    if (!payload.ok()) return payload.status();
    auto j = ParseJson(key, payload.value());
    if (!j.ok()) return j.status();
    out.push_back(std::move(j.value()));
  }
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "coordinator state scan " + prefix));
  return out;
}

Status CoordinatorStore::CommitManifest(const std::string& job_id, int64_t step,
                                        const nlohmann::json& manifest) {
  return Put("manifest/" + job_id + "/" + Step12(step), manifest.dump(), true);
}

Result<std::vector<int64_t>> CoordinatorStore::CommittedSteps(const std::string& job_id) const {
  auto rows = Scan("manifest/" + job_id + "/");
  if (!rows.ok()) return rows.status();
  std::vector<int64_t> steps;
  for (const auto& [key, payload] : rows.value())
    steps.push_back(std::stoll(key.substr(key.size() - 12)));
  return steps;
}

Result<nlohmann::json> CoordinatorStore::Manifest(const std::string& job_id, int64_t step) const {
  const std::string key = "manifest/" + job_id + "/" + Step12(step);
  auto payload = Get(key);
  if (!payload.ok()) return payload.status();
  return ParseJson(key, payload.value());
}

Status CoordinatorStore::DeleteManifest(const std::string& job_id, int64_t step) {
  rocksdb::WriteOptions w;
  w.sync = true;
  const std::string key = "manifest/" + job_id + "/" + Step12(step);
  return FromRocks(db_->Delete(w, key), "coordinator state " + key);
}

}  // namespace moerun::coordinator
