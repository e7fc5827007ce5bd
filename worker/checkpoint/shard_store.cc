#include "worker/checkpoint/shard_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/crc32c.h"
#include "common/timeouts.h"
#include "common/writable_dir.h"

namespace moerun::checkpoint {
namespace {

constexpr char kManifest[] = "~manifest";
constexpr int kStepDigits = 12;

std::string StepPrefix(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*lld/", kStepDigits, static_cast<long long>(step));
  return buf;
}

template <typename V>
void Put(std::string* out, V v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename V>
bool Get(const std::string& in, size_t* pos, V* v) {
  if (*pos + sizeof(V) > in.size()) return false;
  std::memcpy(v, in.data() + *pos, sizeof(V));
  *pos += sizeof(V);
  return true;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 8; }

}  // namespace

Entry Entry::F32(std::string name, std::vector<int64_t> shape, const float* data, int64_t n) {
  Entry e{std::move(name), DType::kF32, std::move(shape), {}};
  e.bytes.resize(static_cast<size_t>(n) * 4);
  std::memcpy(e.bytes.data(), data, e.bytes.size());
  return e;
}

Entry Entry::I64(std::string name, int64_t value) {
  Entry e{std::move(name), DType::kI64, {}, std::vector<uint8_t>(8)};
  std::memcpy(e.bytes.data(), &value, 8);
  return e;
}

int64_t Entry::i64() const {
  int64_t v = 0;
  std::memcpy(&v, bytes.data(), std::min<size_t>(8, bytes.size()));
  return v;
}

int64_t Entry::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string EncodeEntry(const Entry& e) {
  std::string out;
  out.reserve(16 + e.shape.size() * 8 + e.bytes.size());
  Put<uint16_t>(&out, kEntryFormatVersion);
  Put<uint8_t>(&out, static_cast<uint8_t>(e.dtype));
  Put<uint8_t>(&out, static_cast<uint8_t>(e.shape.size()));
  for (int64_t s : e.shape) Put<int64_t>(&out, s);
  Put<uint64_t>(&out, e.bytes.size());
  out.append(reinterpret_cast<const char*>(e.bytes.data()), e.bytes.size());
  Put<uint32_t>(&out, Crc32c(out.data(), out.size()));
  return out;
}

Result<Entry> DecodeEntry(const std::string& name, const std::string& v, const std::string& where) {
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": " + why); };
  if (v.size() < 4) return bad("value of " + std::to_string(v.size()) + " bytes is truncated");
  uint32_t stored;
  std::memcpy(&stored, v.data() + v.size() - 4, 4);
  if (Crc32c(v.data(), v.size() - 4) != stored) return bad("CRC32C mismatch");
  size_t pos = 0;
  uint16_t version;
  uint8_t dtype, ndim;
  if (!Get(v, &pos, &version) || !Get(v, &pos, &dtype) || !Get(v, &pos, &ndim))
    return bad("truncated header");
  if (version != kEntryFormatVersion) {
    return bad("entry format version " + std::to_string(version) + "; this build reads version " +
               std::to_string(kEntryFormatVersion));
  }
  if (dtype != uint8_t(DType::kF32) && dtype != uint8_t(DType::kI64))
    return bad("unknown dtype " + std::to_string(dtype));
  Entry e{name, DType(dtype), {}, {}};
  for (int i = 0; i < ndim; ++i) {
    int64_t s;
    if (!Get(v, &pos, &s) || s < 0) return bad("bad shape");
    e.shape.push_back(s);
  }
  uint64_t n;
  if (!Get(v, &pos, &n) || pos + n + 4 != v.size())
    return bad("payload size does not match the value");
  if (n != uint64_t(e.numel()) * DTypeSize(e.dtype))
    return bad("payload size does not match the shape");
  e.bytes.assign(v.begin() + long(pos), v.begin() + long(pos + n));
  return e;
}

ShardStore::ShardStore(std::string dir, rocksdb::DB* db) : dir_(std::move(dir)), db_(db) {}
ShardStore::~ShardStore() = default;

namespace {

// RocksDB's message without its code's name ("IO error: ..." rather than "Corruption: IO
// error: ...", which our own Status code would repeat).
std::string RocksText(const rocksdb::Status& s) {
  return s.getState() != nullptr ? std::string(s.getState()) : s.ToString();
}

// Another process holds the shard's LOCK: its writer of an earlier generation, not exited yet
// (a rank whose host froze or lost the network fences itself within its lease), or, on a
// shared file system, a lost client's lock that the server has not expired yet.
bool LockHeld(const rocksdb::Status& s) {
  const std::string m = s.ToString();
  return m.find("lock") != std::string::npos &&
         (m.find("Resource temporarily unavailable") != std::string::npos ||
          m.find("lock hold by current process") != std::string::npos ||
          m.find("No locks available") != std::string::npos);
}

// Errors a retry or another step cannot fix: the directory is not ours to write.
bool NotWritable(const rocksdb::Status& s) {
  const std::string m = s.ToString();
  return m.find("Permission denied") != std::string::npos ||
         m.find("Read-only file system") != std::string::npos ||
         m.find("Operation not permitted") != std::string::npos;
}

}  // namespace

Result<std::unique_ptr<ShardStore>> ShardStore::Open(const std::string& dir, bool create) {
  rocksdb::Options options;
  options.create_if_missing = create;
  options.paranoid_checks = true;
  // Checkpoint values are large and written once: no compression, fewer, larger files.
  options.compression = rocksdb::kNoCompression;
  options.write_buffer_size = 64 << 20;
  if (create) {
    options.disable_auto_compactions = true;  // until AllowCompaction()
    options.avoid_flush_during_recovery = true;
  }
  rocksdb::DB* db = nullptr;
  const std::string what = "checkpoint shard " + dir;
  if (!create) {
    // Readers open read-only: no lock, so they may read a shard its writer holds open.
    rocksdb::Status s = rocksdb::DB::OpenForReadOnly(options, dir, &db);
    if (s.IsInvalidArgument()) return Status::NotFound(what + " does not exist");
    // Whatever stops a reader (a missing or damaged file) makes its steps unreadable.
    if (!s.ok()) return Status::Corruption(what + ": " + RocksText(s));
    return std::unique_ptr<ShardStore>(new ShardStore(dir, db));
  }
  // The writer: a damaged write-ahead log fails the open instead of being cut silently.
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kAbsoluteConsistency;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  // A lock is no damage: wait a while for its holder to go, then fail as a retryable error
  // (never Corruption, which would drop a committed step that is fine).
  const auto lock_deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kShardLockWaitMs);
  while (!s.ok() && LockHeld(s) && std::chrono::steady_clock::now() < lock_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kShardLockPollMs));
    s = rocksdb::DB::Open(options, dir, &db);
  }
  if (s.ok()) return std::unique_ptr<ShardStore>(new ShardStore(dir, db));
  if (LockHeld(s)) {
    return Status::Unavailable(what + " is locked by another process for over " +
                               std::to_string(kShardLockWaitMs) +
                               " ms (a trainer of an earlier generation that has not exited, or "
                               "a lost host's lock not yet expired): " +
                               RocksText(s));
  }
  if (NotWritable(s)) {
    return Status::DataLoss(what + " is not writable (" + RocksText(s) +
                            "): fix the directory's permissions or attributes");
  }
  // Damaged: keep what is intact, and say what was not. Every committed step is flushed to
  // checksummed table files (WriteStep), so a damaged log tail holds nothing committed; a
  // missing or damaged table file loses the steps it held, which restore then refuses by
  // name and the coordinator falls back from.
  const std::string first = RocksText(s);
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  s = rocksdb::DB::Open(options, dir, &db);
  // (A writer killed mid-write leaves such a tail too: an incomplete last record.)
  std::string damage = "its write-ahead log is damaged or ends in an incomplete record (" + first +
                       "); the records from there on were dropped, none of them committed";
  if (!s.ok()) {
    options.best_efforts_recovery = true;
    s = rocksdb::DB::Open(options, dir, &db);
    damage = "it is damaged (" + first +
             "); it was opened at the newest state its intact files hold, without its log";
  }
  if (!s.ok()) return Status::Corruption(what + " cannot be opened: " + first);
  auto store = std::unique_ptr<ShardStore>(new ShardStore(dir, db));
  store->damage_ = what + ": " + damage;
  return store;
}

Status ShardStore::AllowCompaction() {
  return FromRocks(db_->SetOptions({{"disable_auto_compactions", "false"}}),
                   "checkpoint shard " + dir_);
}

Result<int64_t> ShardStore::WriteStep(int64_t step, const std::vector<Entry>& entries) {
  // A directory that became unwritable since the shard opened is found here, by name.
  MOERUN_RETURN_IF_ERROR(CheckWritableDir(dir_, "checkpoint shard"));
  const std::string prefix = StepPrefix(step);
  nlohmann::json manifest = nlohmann::json::array();
  int64_t bytes = 0;
  rocksdb::WriteOptions plain;
  for (const Entry& e : entries) {
    const std::string value = EncodeEntry(e);
    uint32_t crc;
    std::memcpy(&crc, value.data() + value.size() - 4, 4);
    manifest.push_back({{"name", e.name}, {"bytes", value.size()}, {"crc32c", crc}});
    bytes += int64_t(value.size());
    MOERUN_RETURN_IF_ERROR(FromRocks(db_->Put(plain, prefix + e.name, value),
                                     "checkpoint shard " + dir_ + " step " + std::to_string(step)));
  }
  rocksdb::WriteOptions durable;
  durable.sync = true;  // the manifest is the commit point: everything before it is in the WAL
  const nlohmann::json m = {{"version", 1}, {"step", step}, {"entries", manifest}};
  MOERUN_RETURN_IF_ERROR(
      FromRocks(db_->Put(durable, prefix + kManifest, m.dump()),
                "checkpoint shard " + dir_ + " manifest of step " + std::to_string(step)));
  // Into checksummed table files: a damaged log then cannot take a committed step with it.
  MOERUN_RETURN_IF_ERROR(
      FromRocks(db_->Flush(rocksdb::FlushOptions()),
                "checkpoint shard " + dir_ + " flush of step " + std::to_string(step)));
  return bytes;
}

Result<std::vector<int64_t>> ShardStore::CompleteSteps() const {
  std::vector<int64_t> steps;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string key = it->key().ToString();
    const auto slash = key.find('/');
    if (slash == kStepDigits && key.compare(slash + 1, std::string::npos, kManifest) == 0) {
      steps.push_back(std::stoll(key.substr(0, slash)));
    }
  }
  MOERUN_RETURN_IF_ERROR(FromRocks(it->status(), "checkpoint shard " + dir_));
  return steps;
}

Result<std::vector<Entry>> ShardStore::ReadStep(int64_t step) const {
  const std::string prefix = StepPrefix(step),
                    where = "checkpoint " + dir_ + " step " + std::to_string(step);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), prefix + kManifest, &value);
  if (s.IsNotFound()) return Status::NotFound(where + ": no manifest (the step never completed)");
  MOERUN_RETURN_IF_ERROR(FromRocks(s, where));
  nlohmann::json m = nlohmann::json::parse(value, nullptr, false);
  if (m.is_discarded() || !m.contains("entries") || m.value("version", 0) != 1) {
    return Status::Corruption(where + ": unreadable manifest");
  }
  std::vector<Entry> entries;
  for (const auto& item : m["entries"]) {
    const std::string name = item.value("name", "");
    s = db_->Get(rocksdb::ReadOptions(), prefix + name, &value);
    if (s.IsNotFound()) return Status::Corruption(where + ", entry " + name + ": missing");
    MOERUN_RETURN_IF_ERROR(FromRocks(s, where + ", entry " + name));
    uint32_t crc = 0;
    if (value.size() >= 4) std::memcpy(&crc, value.data() + value.size() - 4, 4);
    if (value.size() != item.value("bytes", uint64_t(0)) ||
        crc != item.value("crc32c", uint32_t(0))) {
      return Status::Corruption(where + ", entry " + name +
                                ": does not match the manifest's size/CRC");
    }
    auto e = DecodeEntry(name, value, where + ", entry " + name);
    if (!e.ok()) return e.status();
    entries.push_back(std::move(e.value()));
  }
  return entries;
}

Status ShardStore::DeleteStep(int64_t step) {
  const std::string prefix = StepPrefix(step);
  const std::string end = StepPrefix(step + 1);
  rocksdb::WriteOptions durable;
  durable.sync = true;
  // The manifest goes first, so a crash mid-delete leaves an incomplete (ignored) step.
  MOERUN_RETURN_IF_ERROR(FromRocks(db_->Delete(durable, prefix + kManifest), "checkpoint delete"));
  return FromRocks(db_->DeleteRange(durable, db_->DefaultColumnFamily(), prefix, end),
                   "checkpoint delete");
}

}  // namespace moerun::checkpoint
