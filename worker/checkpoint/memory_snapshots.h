// MemorySnapshots: a rank's newest training states in memory that outlives the rank
// (docs/fault-tolerance.md, "Checkpoints in memory"). The rank's daemon names a directory on
// tmpfs (/dev/shm) for the job; every checkpoint.memory_interval_steps steps the rank copies
// its state straight from its arrays into one of kMemorySnapshotsKept slot files it keeps
// mapped (the oldest is overwritten), so a snapshot costs one copy and one CRC pass in the
// training thread: no allocation, no page faults after the first round, no thread. A restarted
// rank on the same host restores from it instead of the disk checkpoint, losing at most the
// steps since the last snapshot; the coordinator decides which step that is, from what every
// rank reports it holds (the two-phase commit, held in the coordinator's memory).
//
// Three kinds of slot files, the same format (SnapshotKind): a rank's own snapshots every
// memory_interval_steps (kSlot), its own every memory_replica_interval_steps kept longer
// (kPinned), and a copy of another rank's pinned ones that its host keeps for it (kReplica: a
// rank whose host is lost restores from the copy). An image (header and body, as in the file)
// is what travels between ranks: Image() of a pinned slot, Store() into a replica slot.
//
// Slot file rank-<R>.<kind>-<K>.mem, version 1, little-endian: a 64-byte header {"MOEMEM01",
// u64 step (0 while being written), u32 rank, u32 entries, u64 body bytes, u32 CRC32C of the
// body}, then the body: per entry u32 name bytes, name, u8 dtype, u32 dims, i64 dims[],
// u64 payload bytes, payload. A write clears the step first and sets it last, so a rank that
// dies mid-copy leaves a slot no reader takes. Reading checks the magic, the step, every bound
// and the CRC; a failure names the file (Corruption). One thread per object.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/mapped_file.h"
#include "worker/checkpoint/shard_store.h"

namespace moerun::checkpoint {

// Three: the coordinator's commit is a step every rank reported holding, newer than its oldest
// (which the next write overwrites), so it is still there when a rank dies right after.
inline constexpr int kMemorySnapshotsKept = 3;

// An entry to snapshot, pointing into the caller's arrays (valid for the Write call).
struct EntryView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // null: the payload is `scalar` (an I64 entry)
  size_t bytes = 0;
  int64_t scalar = 0;
};

enum class SnapshotKind { kSlot, kPinned, kReplica };
const char* ToString(SnapshotKind kind);  // "slot", "pinned", "replica": the file names' word

class MemorySnapshots {
 public:
  // `dir` is created if missing; the error names it. `rank`: whose state the slots hold (for
  // kReplica, the rank this host keeps copies for).
  static Result<std::unique_ptr<MemorySnapshots>> Open(const std::string& dir, int rank,
                                                       SnapshotKind kind = SnapshotKind::kSlot);
  ~MemorySnapshots();

  // Copies `entries` into the oldest slot as step `step` (newer than any held). Slots an
  // earlier process of the rank left count by the step in their header, so a restarted rank
  // overwrites the oldest of those first, not the one it just restored from.
  Status Write(int64_t step, const std::vector<EntryView>& entries);
  // The file image (header and body) of the slot holding `step`, valid until the next write;
  // empty when no slot of this object holds it.
  std::string_view Image(int64_t step) const;
  // Stores an image another rank's Image() made, into the oldest slot, as Write does: the
  // step is set last. Corruption when the image is not a whole version 1 snapshot of this
  // object's rank and `step` that passes its CRC (it came over the network).
  Status Store(int64_t step, std::string_view image);
  // The oldest and newest step this object wrote and holds; {0, 0}: none yet. (An earlier
  // process's slots are not reported: the coordinator counts only what this generation holds.)
  std::pair<int64_t, int64_t> Held() const;
  double write_seconds() const { return write_s_; }
  int64_t written() const { return written_; }

  static std::string SlotPath(const std::string& dir, int rank, int slot,
                              SnapshotKind kind = SnapshotKind::kSlot);
  // Step `step` of `rank`, from whichever slot of `kind` holds it; Corruption naming the file
  // otherwise.
  static Result<std::vector<Entry>> Read(const std::string& dir, int rank, int64_t step,
                                         SnapshotKind kind = SnapshotKind::kSlot);
  // The same, as the file's image (to send to the rank it belongs to), checked as Read does.
  static Result<std::string> ReadImage(const std::string& dir, int rank, int64_t step,
                                       SnapshotKind kind);
  // The entries of an image (ReadImage's, or one received): Corruption, naming `what`, unless
  // it is a whole version 1 snapshot of `rank` and `step` that passes its CRC.
  static Result<std::vector<Entry>> ParseImage(std::string_view image, int rank, int64_t step,
                                               const std::string& what);

 private:
  struct Slot {
    MappedFile file;
    int64_t step = 0;
  };
  MemorySnapshots(std::string dir, int rank, SnapshotKind kind)
      : dir_(std::move(dir)), rank_(rank), kind_(kind) {}
  Status Map(Slot& s, int index, size_t size);
  int OldestSlot();  // the slot the next write takes (an empty one first)

  std::string dir_;
  int rank_;
  SnapshotKind kind_;
  Slot slots_[kMemorySnapshotsKept];
  int64_t found_step_[kMemorySnapshotsKept] = {};  // in a slot's header at Open; 0: none
  double write_s_ = 0;
  int64_t written_ = 0;
};

}  // namespace moerun::checkpoint
