#include "common/message_bodies.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "common/limits.h"

namespace moerun {
namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

const char* TypeName(const nlohmann::json& j) { return j.type_name(); }

bool LayerNameOk(const std::string& layer) {
  return !layer.empty() && layer.size() <= 16 &&
         std::all_of(layer.begin(), layer.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
         });
}

// Errors read "<message>: trainers[i]: ..." or, from `r`, "<message>: 'trainers' ...". With
// `rejected`, an entry that does not parse is left out (counted, its problem kept in
// `*problem` when it is the first) instead of failing the whole list.
Result<std::vector<TrainerReport>> TrainerReports(BodyReader& r, std::string_view message,
                                                  bool required, int* rejected = nullptr,
                                                  std::string* problem = nullptr) {
  std::vector<TrainerReport> out;
  const nlohmann::json& list = r.Array("trainers", required);
  for (size_t i = 0; i < list.size() && r.status().ok(); ++i) {
    const std::string at = "trainers[" + std::to_string(i) + "]";
    BodyReader t(list[i], std::string(message) + ": " + at);
    TrainerReport x;
    x.job = t.String("job");
    x.generation = t.Uint("generation");
    x.rank = int(t.Int("rank", -kIntMax, kIntMax));
    x.running = t.Bool("running");
    x.pid = t.Int("pid", 0, 0, kInt64Max);
    if (!x.running && t.status().ok()) {
      x.exit_code = int(t.Int("exit_code", -kIntMax, kIntMax));
      x.signal = int(t.Int("signal", 0, 128));
      x.text = t.String("text", "");
    }
    if (!t.status().ok()) {
      if (rejected == nullptr) return t.status();
      if ((*rejected)++ == 0) *problem = t.status().message();
      continue;
    }
    out.push_back(std::move(x));
  }
  return r.Finish(std::move(out));
}

}  // namespace

BodyReader::BodyReader(const nlohmann::json& body, std::string_view message)
    : body_(body), message_(message) {
  if (!body_.is_object())
    status_ = Status::InvalidArgument(message_ + ": the body is not an object");
}

void BodyReader::Fail(const std::string& key, const std::string& what) {
  if (status_.ok()) status_ = Status::InvalidArgument(message_ + ": '" + key + "' " + what);
}

void BodyReader::WrongType(const char* key, const char* want, const nlohmann::json& got) {
  Fail(key, std::string("must be ") + want + ", not " + TypeName(got));
}

const nlohmann::json* BodyReader::Field(const char* key, bool required) {
  if (!status_.ok()) return nullptr;
  auto it = body_.find(key);
  if (it == body_.end() || it->is_null()) {
    if (required) Fail(key, "is missing");
    return nullptr;
  }
  return &*it;
}

template <typename T>
T BodyReader::Typed(const char* key, bool required, T fallback, const char* want,
                    bool (nlohmann::json::*is)() const noexcept) {
  const nlohmann::json* j = Field(key, required);
  if (j == nullptr) return fallback;
  if (!(j->*is)()) {
    WrongType(key, want, *j);
    return fallback;
  }
  return j->get<T>();
}

int64_t BodyReader::Integer(const char* key, bool required, int64_t fallback, int64_t min,
                            int64_t max) {
  const nlohmann::json* j = Field(key, required);
  if (j == nullptr) return fallback;
  if (!j->is_number_integer()) {
    WrongType(key, "an integer", *j);
    return fallback;
  }
  // Unsigned values above int64's range are out of range too.
  const bool big = j->is_number_unsigned() && j->get<uint64_t>() > uint64_t(kInt64Max);
  const int64_t v = big ? kInt64Max : j->get<int64_t>();
  if (big || v < min || v > max) {
    Fail(key, "is " + j->dump() + ", outside [" + std::to_string(min) + ", " + std::to_string(max) +
                  "]");
    return fallback;
  }
  return v;
}

std::string BodyReader::String(const char* key) {
  return Typed<std::string>(key, true, {}, "a string", &nlohmann::json::is_string);
}

std::string BodyReader::String(const char* key, std::string fallback) {
  return Typed<std::string>(key, false, std::move(fallback), "a string",
                            &nlohmann::json::is_string);
}

int64_t BodyReader::Int(const char* key, int64_t min, int64_t max) {
  return Integer(key, true, min, min, max);
}

int64_t BodyReader::Int(const char* key, int64_t fallback, int64_t min, int64_t max) {
  return Integer(key, false, fallback, min, max);
}

uint64_t BodyReader::Uint(const char* key) {
  const nlohmann::json* j = Field(key, true);
  if (j == nullptr) return 0;
  if (!j->is_number_integer() || (!j->is_number_unsigned() && j->get<int64_t>() < 0)) {
    WrongType(key, "an unsigned integer", *j);
    return 0;
  }
  return j->get<uint64_t>();
}

double BodyReader::Number(const char* key, double fallback) {
  return Typed<double>(key, false, fallback, "a number", &nlohmann::json::is_number);
}

bool BodyReader::Bool(const char* key) {
  return Typed<bool>(key, true, false, "true or false", &nlohmann::json::is_boolean);
}

bool BodyReader::Bool(const char* key, bool fallback) {
  return Typed<bool>(key, false, fallback, "true or false", &nlohmann::json::is_boolean);
}

const nlohmann::json& BodyReader::Array(const char* key, bool required) {
  static const nlohmann::json kEmpty = nlohmann::json::array();
  const nlohmann::json* j = Field(key, required);
  if (j == nullptr) return kEmpty;
  if (!j->is_array()) {
    WrongType(key, "an array", *j);
    return kEmpty;
  }
  return *j;
}

Result<WorkerStatusBody> WorkerStatusBody::FromJson(const nlohmann::json& body,
                                                    std::string_view message) {
  BodyReader r(body, message);
  WorkerStatusBody w;
  w.host = r.String("host");
  w.devices = r.Int("devices", 0, 4096);
  w.backend = r.String("backend");
  w.data_host = r.String("data_host");
  w.pid = r.Int("pid", 0, kInt64Max);
  w.seq = r.Int("seq", 0, 0, kInt64Max);
  w.home = r.String("home", "");
  if (w.home.size() > 4096) w.home.resize(4096);  // shown, compared; never a path used
  // The daemon's identity decides its liveness; a trainer entry it cannot read only costs
  // that entry (the heartbeat still counts).
  auto trainers = TrainerReports(r, message, false, &w.rejected_trainers, &w.trainer_problem);
  if (!trainers.ok()) return trainers.status();
  w.trainers = std::move(trainers.value());
  // Like a trainer entry, a memory job that is not an id costs only itself.
  for (const auto& j : r.Array("memory_jobs", false)) {
    if (w.memory_jobs.size() >= kMaxMemoryJobsReported) break;
    if (j.is_string() && j.get_ref<const std::string&>().size() <= kMaxMessageIdBytes)
      w.memory_jobs.push_back(j.get<std::string>());
  }
  return r.Finish(std::move(w));
}

Result<TrainerExitedBody> TrainerExitedBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "TrainerExited");
  auto trainers = TrainerReports(r, "TrainerExited", true);
  if (!trainers.ok()) return trainers.status();
  return TrainerExitedBody{std::move(trainers.value())};
}

Result<RendezvousBody> RendezvousBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "Rendezvous");
  RendezvousBody b;
  b.rank = int(r.Int("rank", -kIntMax, kIntMax));
  b.endpoint = r.String("endpoint");
  b.nccl_unique_id = r.String("nccl_unique_id", "");
  return r.Finish(std::move(b));
}

Result<ShardWrittenBody> ShardWrittenBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "ShardWritten");
  ShardWrittenBody b;
  b.rank = int(r.Int("rank", -kIntMax, kIntMax));
  b.step = r.Int("step", 0, kInt64Max);
  b.shard = r.String("shard");
  b.bytes = r.Int("bytes", 0, kInt64Max);
  return r.Finish(std::move(b));
}

Result<PreflightReportBody> PreflightReportBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "PreflightReport");
  PreflightReportBody b;
  b.rank = int(r.Int("rank", -kIntMax, kIntMax));
  b.gemm_gflops = r.Number("gemm_gflops", 0.0);
  const nlohmann::json& pairs = r.Array("pairs", false);
  if (pairs.size() > 2) r.Fail("pairs", "lists " + std::to_string(pairs.size()) + ", at most 2");
  for (size_t i = 0; i < pairs.size() && i < 2 && r.status().ok(); ++i) {
    BodyReader p(pairs[i], "PreflightReport: pairs[" + std::to_string(i) + "]");
    PreflightReportBody::Pair x;
    x.partner = int(p.Int("partner", 0, kIntMax));
    x.gbps = p.Number("gbps", 0.0);
    x.error = p.String("error", "");
    if (x.error.size() > kMaxPreflightErrorChars) x.error.resize(kMaxPreflightErrorChars);
    if (!p.status().ok()) r.Fail("pairs", p.status().message());
    b.pairs.push_back(std::move(x));
  }
  return r.Finish(std::move(b));
}

Result<CheckpointCommittedBody> CheckpointCommittedBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "CheckpointCommitted");
  CheckpointCommittedBody b;
  const nlohmann::json& steps = r.Array("steps", true);
  if (steps.size() > size_t(kMaxCheckpointKeep)) {
    r.Fail("steps", "lists " + std::to_string(steps.size()) + " steps, more than " +
                        std::to_string(kMaxCheckpointKeep));
    return r.Finish(std::move(b));
  }
  for (const auto& s : steps) {
    // Ascending positive steps: a writer deletes by them, so one it cannot read is no list.
    if (!s.is_number_integer() || s.get<int64_t>() < 1 ||
        (!b.steps.empty() && s.get<int64_t>() <= b.steps.back())) {
      r.Fail("steps", "must be ascending positive steps, got " + steps.dump());
      b.steps.clear();
      break;
    }
    b.steps.push_back(s.get<int64_t>());
  }
  return r.Finish(std::move(b));
}

Result<StepReportBody> StepReportBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "StepReport");
  StepReportBody b;
  b.rank = int(r.Int("rank", -kIntMax, kIntMax));
  b.step = r.Int("step", -kInt64Max, kInt64Max);
  b.compute_s = r.Number("compute_s", 0.0);
  b.data_wait_s = r.Number("data_wait_s", 0.0);
  b.bubble_s = r.Number("bubble_s", 0.0);
  if (body.is_object() && body.contains("val_loss") && body["val_loss"].is_number())
    b.val_loss = body["val_loss"].get<double>();
  // [oldest, newest] steps, absent when none.
  auto steps_pair = [&](const char* key, int64_t* oldest, int64_t* newest) {
    if (!body.is_object() || !body.contains(key)) return;
    const nlohmann::json& m = body[key];
    if (!m.is_array() || m.size() != 2 || !m[0].is_number_integer() || !m[1].is_number_integer() ||
        m[0].get<int64_t>() < 0 || m[1].get<int64_t>() < m[0].get<int64_t>()) {
      r.Fail(key, "must be [oldest, newest] steps");
    } else {
      *oldest = m[0].get<int64_t>();
      *newest = m[1].get<int64_t>();
    }
  };
  steps_pair("memory_steps", &b.memory_oldest, &b.memory_newest);
  steps_pair("replica_steps", &b.replica_oldest, &b.replica_newest);
  if (r.status().ok() && body.contains("expert_load")) {
    const nlohmann::json& load = body["expert_load"];
    if (!load.is_object()) r.Fail("expert_load", "must be an object of layer: counts");
    for (auto it = load.begin(); r.status().ok() && load.is_object() && it != load.end(); ++it) {
      const std::string key = "expert_load." + it.key();
      if (!LayerNameOk(it.key())) {
        r.Fail(key, "names a MoE layer that is not [A-Za-z0-9._-]{1,16}");
        break;
      }
      std::vector<int64_t> counts;
      const nlohmann::json& c = it.value();
      if (!c.is_array()) r.Fail(key, "must be an array of token counts");
      for (size_t e = 0; r.status().ok() && c.is_array() && e < c.size(); ++e) {
        if (!c[e].is_number_integer()) {
          r.Fail(key, "must hold integers only");
          break;
        }
        counts.push_back(c[e].get<int64_t>());
      }
      b.expert_load[it.key()] = std::move(counts);
    }
  }
  if (!r.status().ok()) return r.status();
  b.scalars = body;
  b.scalars.erase("expert_load");
  return b;
}

Result<SubmitJobBody> SubmitJobBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "SubmitJob");
  SubmitJobBody b;
  b.spec_yaml = r.String("spec_yaml");
  b.source = r.String("source", "submitted job");
  b.steps = r.Int("steps", 0, -kInt64Max, kInt64Max);
  b.run_dir = r.String("run_dir", "");
  b.spec_dir = r.String("spec_dir", "");
  b.resume = r.Bool("resume", false);
  return r.Finish(std::move(b));
}

Result<StopJobBody> StopJobBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "StopJob");
  StopJobBody b;
  b.reason = r.String("reason", "");
  if (b.reason.size() > kMaxStopReasonChars) {
    return Status::InvalidArgument("StopJob: reason is " + std::to_string(b.reason.size()) +
                                   " characters; at most " + std::to_string(kMaxStopReasonChars));
  }
  return r.Finish(std::move(b));
}

Result<QueryBody> QueryBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "Query");
  QueryBody b;
  b.what = r.String("what");
  b.since_step = r.Int("since_step", 0, -kInt64Max, kInt64Max);
  b.limit = r.Int("limit", kInt64Max, 0, kInt64Max);
  b.layer = r.String("layer", "");
  if (b.what == "log") {
    b.job = r.String("job");
    b.rank = int(r.Int("rank", 0, -kIntMax, kIntMax));
    b.offset = r.Int("offset", 0, -kInt64Max, kInt64Max);
    b.max_bytes = r.Int("max_bytes", kInt64Max, 0, kInt64Max);
  }
  return r.Finish(std::move(b));
}

Result<DaemonReplyBody> DaemonReplyBody::FromJson(const nlohmann::json& body,
                                                  std::string_view message) {
  BodyReader r(body, message);
  DaemonReplyBody b;
  b.heartbeat_interval_ms = r.Int("heartbeat_interval_ms", 0, 0, kInt64Max);
  b.heartbeat_timeout_ms = r.Int("heartbeat_timeout_ms", 0, 0, kInt64Max);
  const nlohmann::json& acked = r.Array("acked", false);
  for (size_t i = 0; i < acked.size() && r.status().ok(); ++i) {
    BodyReader a(acked[i], std::string(message) + ": acked[" + std::to_string(i) + "]");
    TrainerAck ack;
    ack.job = a.String("job");
    ack.generation = a.Uint("generation");
    ack.rank = int(a.Int("rank", -kIntMax, kIntMax));
    if (!a.status().ok()) return a.status();
    b.acked.push_back(std::move(ack));
  }
  return r.Finish(std::move(b));
}

Result<StartTrainersBody> StartTrainersBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "StartTrainers");
  StartTrainersBody b;
  const nlohmann::json& ranks = r.Array("ranks", true);
  for (size_t i = 0; i < ranks.size() && r.status().ok(); ++i) {
    if (!ranks[i].is_number_integer() || ranks[i].get<int64_t>() < 0 ||
        ranks[i].get<int64_t>() > kIntMax) {
      r.Fail("ranks[" + std::to_string(i) + "]", "must be a rank (a non-negative integer)");
      break;
    }
    b.ranks.push_back(ranks[i].get<int>());
  }
  b.spec_yaml = r.String("spec_yaml");
  b.run_dir = r.String("run_dir");
  b.world = r.Int("world", 1, kIntMax);
  b.spec_dir = r.String("spec_dir", "");
  b.resume = r.Bool("resume", false);
  b.restore_step = r.Int("restore_step", -1, -1, kInt64Max);
  b.data_plane_timeout_ms = r.Int("data_plane_timeout_ms", 0, 0, kInt64Max);
  b.steps = r.Int("steps", 0, 0, kInt64Max);
  b.restore_from_memory = r.Bool("restore_from_memory", false);
  // Rank lists of the job's world: each entry a rank or -1.
  auto ranks_of_world = [&](const char* key, std::vector<int>* out) {
    const nlohmann::json& list = r.Array(key, false);
    if (list.empty()) return;
    if (int64_t(list.size()) != b.world) {
      r.Fail(key, "must list one entry per rank (" + std::to_string(b.world) + ")");
      return;
    }
    for (const auto& v : list) {
      if (!v.is_number_integer() || v.get<int64_t>() < -1 || v.get<int64_t>() >= b.world) {
        r.Fail(key, "must hold ranks of the job or -1");
        out->clear();
        return;
      }
      out->push_back(v.get<int>());
    }
  };
  ranks_of_world("replica_to", &b.replica_to);
  ranks_of_world("replica_fetch", &b.replica_fetch);
  // The generation's data-plane key pair: both Z85 keys, or neither (plain sockets).
  b.data_plane_public = r.String("data_plane_public", "");
  b.data_plane_secret = r.String("data_plane_secret", "");
  if (b.data_plane_public.size() != b.data_plane_secret.size() ||
      (!b.data_plane_public.empty() && b.data_plane_public.size() != 40)) {
    r.Fail("data_plane_public", "and data_plane_secret must be two Z85 CURVE keys, or absent");
  }
  return r.Finish(std::move(b));
}

Result<StopTrainersBody> StopTrainersBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "StopTrainers");
  StopTrainersBody b;
  b.below_generation = r.Uint("below_generation");
  b.grace_ms = r.Int("grace_ms", -1, -1, kInt64Max);
  return r.Finish(std::move(b));
}

Result<LogRequestBody> LogRequestBody::FromJson(const nlohmann::json& body) {
  BodyReader r(body, "log request");
  LogRequestBody b;
  b.request_id = r.String("request_id");
  b.rank = int(r.Int("rank", -kIntMax, kIntMax));
  b.offset = r.Int("offset", 0, -kInt64Max, kInt64Max);
  b.max_bytes = r.Int("max_bytes", -1, -1, kInt64Max);
  return r.Finish(std::move(b));
}

}  // namespace moerun
