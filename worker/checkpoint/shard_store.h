// ShardStore: one logical checkpoint shard (docs/architecture.md §7) in its own RocksDB.
//
// Keys are "<step, 12 digits>/<entry name>" so steps sort numerically. Each value is
// self-describing and checked: format version, dtype, shape, payload, then a CRC32C of all
// of that. A step becomes complete only when its manifest ("<step>/~manifest": every entry's
// name, byte count and CRC) is written, last and with fsync, so a crash mid-write never
// produces a step that looks complete. Reading verifies every CRC against the manifest and
// names the step and entry on any mismatch.
//
// Threading: one writer at a time; reads may run concurrently with a write of another step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace rocksdb {
class DB;
}

namespace moerun::checkpoint {

enum class DType : uint8_t { kF32 = 1, kI64 = 2 };

struct Entry {
  std::string name;  // e.g. "param/model.norm.weight", "adam_m/...", "meta/step"
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian payload

  static Entry F32(std::string name, std::vector<int64_t> shape, const float* data, int64_t n);
  static Entry I64(std::string name, int64_t value);
  const float* f32() const { return reinterpret_cast<const float*>(bytes.data()); }
  int64_t i64() const;
  int64_t numel() const;
};

inline constexpr uint16_t kEntryFormatVersion = 1;

// Value encoding, exposed for tests: decode fails with Corruption naming `where`.
std::string EncodeEntry(const Entry& e);
Result<Entry> DecodeEntry(const std::string& name, const std::string& value,
                          const std::string& where);

class ShardStore {
 public:
  // create_if_missing = false opens read-only (no lock: a shard its writer holds open can be
  // read); such a store cannot write or delete.
  // The writer's store opens with compactions off and no flush during recovery, so no file
  // of the shard disappears while other ranks open it read-only to restore (RocksDB deletes
  // the files a compaction or a recovery flush made obsolete). Call AllowCompaction() once
  // every reader is done.
  //
  // Failures: a reader's open fails with Corruption (the shard's steps are unreadable), or
  // NotFound when the shard does not exist. The writer's open fails with DataLoss when the
  // directory is not writable; a damaged shard (a damaged log, a missing or damaged table
  // file) is opened with what is intact, and damage() says what was lost; Corruption when
  // even that fails. A shard whose lock another process holds (an earlier generation's writer
  // not gone yet) is retried for kShardLockWaitMs (common/timeouts.h), then fails Unavailable:
  // retryable, and no reason to think its steps damaged. Blocks for that long at most.
  static Result<std::unique_ptr<ShardStore>> Open(const std::string& dir, bool create_if_missing);
  // Empty, or what the writer's open found damaged and dropped (for the log and the restore
  // error).
  const std::string& damage() const { return damage_; }
  Status AllowCompaction();
  ~ShardStore();

  // Writes every entry, then the manifest with fsync, then flushes the step into table files.
  // Returns the bytes written.
  Result<int64_t> WriteStep(int64_t step, const std::vector<Entry>& entries);
  // Steps with a manifest, ascending.
  Result<std::vector<int64_t>> CompleteSteps() const;
  // Every entry of a complete step, each checked against the manifest.
  Result<std::vector<Entry>> ReadStep(int64_t step) const;
  Status DeleteStep(int64_t step);
  const std::string& dir() const { return dir_; }

 private:
  ShardStore(std::string dir, rocksdb::DB* db);
  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::string damage_;
};

}  // namespace moerun::checkpoint
