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
constexpr size_t kStepOffset = 8, kAfterStep = 16;  // the header's step: bytes [8, 16)

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

// A slot's header as it lies in the file, read with one read: Open takes the step of each slot
// an earlier process left, Read the slot that holds the step asked for.
struct SlotHeader {
  bool magic_ok = false;
  uint64_t step = 0;  // 0: being written, or none
  uint32_t rank = 0, entries = 0;
  uint64_t body_bytes = 0;
  uint32_t crc = 0;
  uint64_t file_bytes = 0;
};

// False when the file is missing or shorter than a header.
bool ReadSlotHeader(std::ifstream& in, SlotHeader* h) {
  char bytes[kHeaderBytes];
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0);
  if (!in || size < std::streamoff(kHeaderBytes) || !in.read(bytes, kHeaderBytes)) return false;
  Cursor c(bytes, kHeaderBytes);
  h->magic_ok = std::memcmp(c.Bytes(8), kMagic, 8) == 0;
  h->step = c.Get<uint64_t>();
  h->rank = c.Get<uint32_t>();
  h->entries = c.Get<uint32_t>();
  h->body_bytes = c.Get<uint64_t>();
  h->crc = c.Get<uint32_t>();
  h->file_bytes = uint64_t(size);
  return true;
}

// What an image's header promises, once CheckImage has held it to it.
struct ImageShape {
  uint32_t entries = 0;
  uint64_t body_bytes = 0;
};

// An image's header and CRC, checked: Corruption naming `what` unless it is a whole version 1
// snapshot of `rank` and `step`.
Result<ImageShape> CheckImage(std::string_view image, int rank, int64_t step,
                              const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(what + " of step " + std::to_string(step) + ": " + why);
  };
  if (image.size() < kHeaderBytes) return bad("shorter than its header");
  Cursor head(image.data(), kHeaderBytes);
  const bool magic_ok = std::memcmp(head.Bytes(8), kMagic, 8) == 0;
  const uint64_t got_step = head.Get<uint64_t>();
  const uint32_t got_rank = head.Get<uint32_t>(), entries = head.Get<uint32_t>();
  const uint64_t body_bytes = head.Get<uint64_t>();
  const uint32_t crc = head.Get<uint32_t>();
  if (!magic_ok) return bad("not a version 1 snapshot");
  if (got_step != uint64_t(step) || got_rank != uint32_t(rank))
    return bad("it holds step " + std::to_string(got_step) + " of rank " +
               std::to_string(got_rank));
  if (body_bytes > image.size() - kHeaderBytes) return bad("its header does not fit the file");
  if (Crc32c(image.data() + kHeaderBytes, body_bytes) != crc) return bad("it fails its CRC");
  return ImageShape{entries, body_bytes};
}

}  // namespace

const char* ToString(SnapshotKind kind) {
  static constexpr const char* kNames[] = {"slot", "pinned", "replica"};  // SnapshotKind order
  return kNames[static_cast<int>(kind)];
}

std::string MemorySnapshots::SlotPath(const std::string& dir, int rank, int slot,
                                      SnapshotKind kind) {
  return dir + "/rank-" + std::to_string(rank) + "." + ToString(kind) + "-" + std::to_string(slot) +
         ".mem";
}

Result<std::unique_ptr<MemorySnapshots>> MemorySnapshots::Open(const std::string& dir, int rank,
                                                               SnapshotKind kind) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IOError("memory snapshots: cannot create " + dir + ": " + ec.message());
  std::unique_ptr<MemorySnapshots> m(new MemorySnapshots(dir, rank, kind));
  for (int i = 0; i < kMemorySnapshotsKept; ++i) {
    std::ifstream in(SlotPath(dir, rank, i, kind), std::ios::binary);
    SlotHeader h;
    if (ReadSlotHeader(in, &h) && h.magic_ok) m->found_step_[i] = int64_t(h.step);
  }
  return m;
}

MemorySnapshots::~MemorySnapshots() = default;

Status MemorySnapshots::Map(Slot& s, int index, size_t size) {
  if (s.file.mapped() && s.file.size() == size) return Status::OK();
  s = Slot{};
  auto file = MappedFile::Map(SlotPath(dir_, rank_, index, kind_), MappedFile::Mode::kResize, size,
                              "memory snapshot");
  if (!file.ok()) return file.status();
  s.file = std::move(file.value());
  return Status::OK();
}

int MemorySnapshots::OldestSlot() {
  auto age = [&](int i) { return slots_[i].step > 0 ? slots_[i].step : found_step_[i]; };
  int index = 0;
  for (int i = 1; i < kMemorySnapshotsKept; ++i)
    if (age(i) < age(index)) index = i;
  found_step_[index] = 0;
  return index;
}

Status MemorySnapshots::Write(int64_t step, const std::vector<EntryView>& entries) {
  const auto t0 = std::chrono::steady_clock::now();
  const int index = OldestSlot();
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

std::string_view MemorySnapshots::Image(int64_t step) const {
  for (const Slot& s : slots_)
    if (s.step == step && s.file.mapped())
      return {static_cast<const char*>(s.file.data()), s.file.size()};
  return {};
}

Status MemorySnapshots::Store(int64_t step, std::string_view image) {
  const auto t0 = std::chrono::steady_clock::now();
  // Its header and CRC: a copy is parsed only when it is restored.
  auto checked = CheckImage(image, rank_, step, "received snapshot");
  if (!checked.ok()) return checked.status();
  const int index = OldestSlot();
  Slot& s = slots_[index];
  s.step = 0;
  MOERUN_RETURN_IF_ERROR(Map(s, index, image.size()));
  auto* h = static_cast<Header*>(s.file.data());
  h->step.store(0, std::memory_order_release);
  // Everything but the step, then the step: a reader never takes a half-stored slot.
  char* base = static_cast<char*>(s.file.data());
  std::memcpy(base, image.data(), kStepOffset);
  std::memcpy(base + kAfterStep, image.data() + kAfterStep, image.size() - kAfterStep);
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

namespace {

// The image of the slot of `kind` holding `step` and its path; its header checked, not its body.
Result<std::string> ReadSlotImage(const std::string& dir, int rank, int64_t step, SnapshotKind kind,
                                  std::string* path_out) {
  for (int i = 0; i < kMemorySnapshotsKept; ++i) {
    const std::string path = MemorySnapshots::SlotPath(dir, rank, i, kind);
    // The header first: the other slots hold other steps, and a restart waits on this read.
    std::ifstream in(path, std::ios::binary);
    SlotHeader h;
    if (!ReadSlotHeader(in, &h) || h.step != uint64_t(step)) continue;  // another step, or none
    auto bad = [&](const std::string& why) {
      return Status::Corruption("memory snapshot " + path + " of step " + std::to_string(step) +
                                ": " + why);
    };
    if (!h.magic_ok) return bad("not a version 1 snapshot");
    if (h.rank != uint32_t(rank) || h.body_bytes > h.file_bytes - kHeaderBytes)
      return bad("its header does not fit the file");
    std::string image(kHeaderBytes + h.body_bytes, '\0');  // then the whole slot, in one read
    in.seekg(0);
    if (!in.read(image.data(), std::streamsize(image.size()))) return bad("cannot be read");
    *path_out = path;
    return image;
  }
  return Status::Corruption(
      std::string("memory snapshot of step ") + std::to_string(step) + " of rank " +
      std::to_string(rank) +
      (kind == SnapshotKind::kSlot ? "" : std::string(" (") + ToString(kind) + ")") +
      " is not in " + dir);
}

}  // namespace

Result<std::string> MemorySnapshots::ReadImage(const std::string& dir, int rank, int64_t step,
                                               SnapshotKind kind) {
  std::string path;
  auto image = ReadSlotImage(dir, rank, step, kind, &path);
  if (!image.ok()) return image.status();
  // Checked, not parsed: the rank it goes to parses it.
  auto checked = CheckImage(image.value(), rank, step, "memory snapshot " + path);
  if (!checked.ok()) return checked.status();
  return image;
}

Result<std::vector<Entry>> MemorySnapshots::Read(const std::string& dir, int rank, int64_t step,
                                                 SnapshotKind kind) {
  std::string path;
  auto image = ReadSlotImage(dir, rank, step, kind, &path);
  if (!image.ok()) return image.status();
  return ParseImage(image.value(), rank, step, "memory snapshot " + path);
}

Result<std::vector<Entry>> MemorySnapshots::ParseImage(std::string_view image, int rank,
                                                       int64_t step, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(what + " of step " + std::to_string(step) + ": " + why);
  };
  auto checked = CheckImage(image, rank, step, what);
  if (!checked.ok()) return checked.status();
  const uint32_t entries = checked->entries;
  Cursor c(image.data() + kHeaderBytes, checked->body_bytes);
  std::vector<Entry> out;
  for (uint32_t k = 0; k < entries && c.ok(); ++k) {
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
  if (!c.ok() || out.size() != entries) return bad("it is truncated");
  return out;
}

}  // namespace moerun::checkpoint
