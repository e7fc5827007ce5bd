// Reading a run's checkpoint as a whole: every shard store under the checkpoint directory
// (stage-S/dp-D), the steps complete in all of them, and one step's entries combined.
// Replicated entries (the same name in several data-parallel shards) are taken once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/checkpoint/shard_store.h"

namespace moerun::checkpoint {

class RunCheckpoints {
 public:
  // Opens every shard under `dir`; NotFound when there is none.
  static Result<RunCheckpoints> Open(const std::string& dir);
  // The same, leaving out shards that cannot be opened: each goes into *unreadable as
  // "stage-S/dp-D: reason" (names relative to `dir`). NotFound when there is no shard at all.
  static Result<RunCheckpoints> OpenReadable(const std::string& dir,
                                             std::vector<std::string>* unreadable);

  // Steps complete in every shard, ascending.
  Result<std::vector<int64_t>> CompleteSteps() const;
  // All entries of `step` from all shards, each verified.
  Result<std::vector<Entry>> ReadStep(int64_t step) const;
  // The newest complete step whose every entry verifies; skipped steps are reported in
  // *refused as "step S: reason".
  Result<int64_t> NewestReadableStep(std::vector<std::string>* refused) const;
  size_t shards() const { return stores_.size(); }

 private:
  std::vector<std::shared_ptr<ShardStore>> stores_;
};

}  // namespace moerun::checkpoint
