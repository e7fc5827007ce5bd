#include "worker/comm/flight_recorder.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"

namespace moerun::comm {
namespace {

constexpr char kMagic[9] = "MOEFLT01";
constexpr size_t kHeaderBytes = 64, kRecordBytes = 64, kGroupChars = 16;

struct Header {
  char magic[8];
  int64_t rank;
  int64_t capacity;
  std::atomic<uint64_t> written;  // records completed or begun, the newest being seq
};

// One record as it lies in the file.
struct Record {
  std::atomic<uint64_t> seq;  // written last on Begin: a reader trusts a record whose seq fits
  uint64_t group_seq;
  int64_t start_ns;
  std::atomic<int64_t> end_ns;
  uint64_t bytes;
  uint8_t op, ok;
  int16_t peer, group_rank, group_size;
  char group[kGroupChars];
};
static_assert(sizeof(Header) <= kHeaderBytes && sizeof(Record) == kRecordBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

Header* HeaderOf(void* map) { return static_cast<Header*>(map); }
Record* RecordAt(void* map, int64_t capacity, uint64_t seq) {
  return reinterpret_cast<Record*>(static_cast<char*>(map) + kHeaderBytes) +
         (seq - 1) % uint64_t(capacity);
}

}  // namespace

const char* ToString(FlightOp op) {
  switch (op) {
    case FlightOp::kSend:
      return "send";
    case FlightOp::kRecv:
      return "recv";
    case FlightOp::kSendRecv:
      return "send_recv";
    case FlightOp::kAllReduce:
      return "all_reduce";
    case FlightOp::kAllToAll:
      return "all_to_all";
    case FlightOp::kBroadcast:
      return "broadcast";
    case FlightOp::kBarrier:
      return "barrier";
  }
  return "?";
}

nlohmann::json FlightEntry::ToJson(int64_t now_ns) const {
  nlohmann::json j = {{"seq", seq},
                      {"op", ToString(op)},
                      {"group", group},
                      {"group_seq", group_seq},
                      {"group_rank", group_rank},
                      {"group_size", group_size},
                      {"bytes", bytes},
                      {"ok", ok},
                      {"age_ms", (now_ns - start_ns) / 1'000'000}};
  if (peer >= 0) j["peer"] = peer;
  if (end_ns > 0)
    j["took_ms"] = double(end_ns - start_ns) / 1e6;
  else
    j["running"] = true;
  return j;
}

int64_t FlightRecorder::NowNs() { return SystemClock::Default()->NowNs(); }

Result<std::shared_ptr<FlightRecorder>> FlightRecorder::Create(const std::string& path, int rank,
                                                               int64_t capacity) {
  if (capacity <= 0) return Status::InvalidArgument("flight recorder capacity must be positive");
  const size_t bytes = kHeaderBytes + size_t(capacity) * kRecordBytes;
  auto file = MappedFile::Map(path, MappedFile::Mode::kCreate, bytes, "flight recorder");
  if (!file.ok()) return file.status();
  Header* h = HeaderOf(file->data());
  h->rank = rank;
  h->capacity = capacity;
  h->written.store(0);
  std::memcpy(h->magic, kMagic, 8);
  return std::shared_ptr<FlightRecorder>(new FlightRecorder(std::move(file.value()), capacity));
}

uint64_t FlightRecorder::Begin(FlightOp op, const std::string& group, uint64_t group_seq,
                               int group_rank, int group_size, int peer, uint64_t bytes) {
  const uint64_t seq = next_seq_++;
  Record* r = RecordAt(file_.data(), capacity_, seq);
  r->seq.store(0, std::memory_order_relaxed);  // being rewritten
  r->group_seq = group_seq;
  r->start_ns = NowNs();
  r->end_ns.store(0, std::memory_order_relaxed);
  r->bytes = bytes;
  r->op = uint8_t(op);
  r->ok = 1;
  r->peer = int16_t(peer);
  r->group_rank = int16_t(group_rank);
  r->group_size = int16_t(group_size);
  std::memset(r->group, 0, kGroupChars);
  std::memcpy(r->group, group.data(), std::min(group.size(), kGroupChars - 1));
  r->seq.store(seq, std::memory_order_release);
  HeaderOf(file_.data())->written.store(seq, std::memory_order_release);
  return seq;
}

void FlightRecorder::End(uint64_t seq, bool ok) {
  Record* r = RecordAt(file_.data(), capacity_, seq);
  if (r->seq.load(std::memory_order_relaxed) != seq) return;
  r->ok = ok ? 1 : 0;
  r->end_ns.store(NowNs(), std::memory_order_release);
}

Result<FlightRecorder::Contents> FlightRecorder::Read(const std::string& path, size_t last) {
  auto file = MappedFile::Map(path, MappedFile::Mode::kReadOnly, 0, "flight recorder");
  if (!file.ok()) return file.status();
  if (file->size() < kHeaderBytes)
    return Status::Corruption("flight recorder " + path + " has no header");
  void* map = file->data();
  const Header* h = HeaderOf(map);
  if (std::memcmp(h->magic, kMagic, 8) != 0)
    return Status::Corruption("flight recorder " + path + " is not a version 1 recorder file");
  if (h->capacity <= 0 || file->size() < kHeaderBytes + size_t(h->capacity) * kRecordBytes)
    return Status::Corruption("flight recorder " + path + " is shorter than its capacity");
  Contents out;
  out.rank = int(h->rank);
  out.written = h->written.load(std::memory_order_acquire);
  const uint64_t n = std::min<uint64_t>({out.written, uint64_t(h->capacity), last});
  for (uint64_t seq = out.written - n + 1; seq <= out.written && n > 0; ++seq) {
    const Record* r = RecordAt(map, h->capacity, seq);
    if (r->seq.load(std::memory_order_acquire) != seq) continue;  // being rewritten
    FlightEntry e;
    e.seq = seq;
    e.group_seq = r->group_seq;
    e.start_ns = r->start_ns;
    e.end_ns = r->end_ns.load(std::memory_order_acquire);
    e.bytes = r->bytes;
    e.op = FlightOp(r->op);
    e.ok = r->ok != 0;
    e.peer = r->peer;
    e.group_rank = r->group_rank;
    e.group_size = r->group_size;
    e.group.assign(r->group, strnlen(r->group, kGroupChars));
    out.entries.push_back(std::move(e));
  }
  return out;
}

}  // namespace moerun::comm
