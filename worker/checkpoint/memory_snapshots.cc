#include "worker/checkpoint/memory_snapshots.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/crc32c.h"

namespace moerun::checkpoint {
namespace {

namespace fs = std::filesystem;
constexpr char kMagic[9] = "MOEMEM01";
constexpr size_t kHeaderBytes = 64;

struct Header {
  char magic[8];
  std::atomic<uint64_t> step;  // 0 while the body is being written
  uint32_t rank, entries;
  uint64_t body_bytes;
  uint32_t crc;
};
static_assert(sizeof(Header) <= kHeaderBytes);

size_t BodyBytes(const std::vector<EntryView>& entries) {
  size_t n = 0;
  for (const auto& e : entries)
    n += 4 + e.name.size() + 1 + 4 + 8 * e.shape.size() + 8 + (e.data ? e.bytes : 8);
  return n;
}

template <typename T>
char* Put(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
  return p + sizeof v;
}

// Reads little-endian values from a byte range, failing once on the first overrun.
class Cursor {
 public:
  Cursor(const char* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  T Get() {
    T v{};
    if (const char* p = Bytes(sizeof v)) std::memcpy(&v, p, sizeof v);
    return v;
  }
  const char* Bytes(uint64_t n) {
    if (!ok_ || n > size_ - pos_) {
      ok_ = false;
      return nullptr;
    }
    pos_ += n;
    return data_ + pos_ - n;
  }
  bool ok() const { return ok_; }

 private:
  const char* data_;
  size_t size_, pos_ = 0;
  bool ok_ = true;
};

}  // namespace

std::string MemorySnapshots::SlotPath(const std::string& dir, int rank, int slot) {
  return dir + "/rank-" + std::to_string(rank) + ".slot-" + std::to_string(slot) + ".mem";
}

Result<std::unique_ptr<MemorySnapshots>> MemorySnapshots::Open(const std::string& dir, int rank) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IOError("memory snapshots: cannot create " + dir + ": " + ec.message());
  std::unique_ptr<MemorySnapshots> m(new MemorySnapshots(dir, rank));
  for (int i = 0; i < kMemorySnapshotsKept; ++i) {
    char head[16] = {0};
    std::ifstream in(SlotPath(dir, rank, i), std::ios::binary);
    if (in.read(head, sizeof head) && std::memcmp(head, kMagic, 8) == 0)
      std::memcpy(&m->found_step_[i], head + 8, 8);
  }
  return m;
}

MemorySnapshots::~MemorySnapshots() = default;

Status MemorySnapshots::Map(Slot& s, int index, size_t size) {
  if (s.file.mapped() && s.file.size() == size) return Status::OK();
  s = Slot{};
  auto file = MappedFile::Map(SlotPath(dir_, rank_, index), MappedFile::Mode::kResize, size,
                              "memory snapshot");
  if (!file.ok()) return file.status();
  s.file = std::move(file.value());
  return Status::OK();
}

Status MemorySnapshots::Write(int64_t step, const std::vector<EntryView>& entries) {
  const auto t0 = std::chrono::steady_clock::now();
  // The oldest slot (an empty one first) takes the new step.
  auto age = [&](int i) { return slots_[i].step > 0 ? slots_[i].step : found_step_[i]; };
  int index = 0;
  for (int i = 1; i < kMemorySnapshotsKept; ++i)
    if (age(i) < age(index)) index = i;
  found_step_[index] = 0;
  Slot& s = slots_[index];
  s.step = 0;
  const size_t body = BodyBytes(entries);
  MOERUN_RETURN_IF_ERROR(Map(s, index, kHeaderBytes + body));
  auto* h = static_cast<Header*>(s.file.data());
  h->step.store(0, std::memory_order_release);  // no reader takes a slot being written
  char* p = static_cast<char*>(s.file.data()) + kHeaderBytes;
  for (const auto& e : entries) {
    p = Put<uint32_t>(p, uint32_t(e.name.size()));
    std::memcpy(p, e.name.data(), e.name.size());
    p += e.name.size();
    p = Put<uint8_t>(p, uint8_t(e.dtype));
    p = Put<uint32_t>(p, uint32_t(e.shape.size()));
    for (int64_t d : e.shape) p = Put<int64_t>(p, d);
    const size_t n = e.data ? e.bytes : 8;
    p = Put<uint64_t>(p, uint64_t(n));
    std::memcpy(p, e.data ? e.data : &e.scalar, n);
    p += n;
  }
  std::memcpy(h->magic, kMagic, 8);
  h->rank = uint32_t(rank_);
  h->entries = uint32_t(entries.size());
  h->body_bytes = body;
  h->crc = Crc32c(static_cast<char*>(s.file.data()) + kHeaderBytes, body);
  h->step.store(uint64_t(step), std::memory_order_release);
  s.step = step;
  ++written_;
  write_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::OK();
}

std::pair<int64_t, int64_t> MemorySnapshots::Held() const {
  int64_t oldest = 0, newest = 0;
  for (const Slot& s : slots_) {
    if (s.step <= 0) continue;
    oldest = oldest == 0 ? s.step : std::min(oldest, s.step);
    newest = std::max(newest, s.step);
  }
  return {oldest, newest};
}

void MemorySnapshots::RemoveAll() {
  for (int i = 0; i < kMemorySnapshotsKept; ++i) {
    slots_[i] = Slot{};
    std::error_code ec;
    fs::remove(SlotPath(dir_, rank_, i), ec);
  }
}

Result<std::vector<Entry>> MemorySnapshots::Read(const std::string& dir, int rank, int64_t step) {
  std::string problems;
  for (int i = 0; i < kMemorySnapshotsKept; ++i) {
    const std::string path = SlotPath(dir, rank, i);
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) continue;
    // The header first: the other slots hold other steps, and a restart waits on this read.
    const std::streamoff size = in.tellg();
    std::string data(
        size_t(std::max<std::streamoff>(0, std::min<std::streamoff>(size, kHeaderBytes))), '\0');
    in.seekg(0);
    if (!in.read(data.data(), std::streamsize(data.size()))) continue;
    Cursor head(data.data(), data.size());
    const char* magic = head.Bytes(8);
    const uint64_t file_step = head.Get<uint64_t>();
    if (!head.ok() || file_step != uint64_t(step)) continue;  // another step, or none
    data.resize(size_t(size));                                // then the whole file, in one read
    if (!in.seekg(0) || !in.read(data.data(), std::streamsize(size))) {
      return Status::Corruption("memory snapshot " + path + " of step " + std::to_string(step) +
                                ": cannot be read");
    }
    head = Cursor(data.data(), data.size());
    magic = head.Bytes(8);
    head.Get<uint64_t>();
    auto bad = [&](const std::string& why) {
      return Status::Corruption("memory snapshot " + path + " of step " + std::to_string(step) +
                                ": " + why);
    };
    if (std::memcmp(magic, kMagic, 8) != 0) return bad("not a version 1 snapshot");
    const uint32_t file_rank = head.Get<uint32_t>();
    const uint32_t n = head.Get<uint32_t>();
    const uint64_t body = head.Get<uint64_t>();
    const uint32_t crc = head.Get<uint32_t>();
    if (!head.ok() || file_rank != uint32_t(rank) || body > data.size() - kHeaderBytes)
      return bad("its header does not fit the file");
    if (Crc32c(data.data() + kHeaderBytes, body) != crc) return bad("it fails its CRC");
    Cursor c(data.data() + kHeaderBytes, body);
    std::vector<Entry> out;
    for (uint32_t k = 0; k < n && c.ok(); ++k) {
      Entry e;
      const uint32_t name_bytes = c.Get<uint32_t>();
      const char* name = c.Bytes(name_bytes);
      if (!name) break;
      e.name.assign(name, name_bytes);
      e.dtype = DType(c.Get<uint8_t>());
      const uint32_t dims = c.Get<uint32_t>();
      if (dims > 8) return bad("entry " + e.name + " has " + std::to_string(dims) + " dims");
      for (uint32_t d = 0; d < dims; ++d) e.shape.push_back(c.Get<int64_t>());
      const uint64_t bytes = c.Get<uint64_t>();
      const char* payload = c.Bytes(bytes);
      if (!payload) break;
      e.bytes.assign(payload, payload + bytes);
      out.push_back(std::move(e));
    }
    if (!c.ok() || out.size() != n) return bad("it is truncated");
    return out;
  }
  return Status::Corruption("memory snapshot of step " + std::to_string(step) + " of rank " +
                            std::to_string(rank) + " is not in " + dir);
}

}  // namespace moerun::checkpoint
