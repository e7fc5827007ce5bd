// The weights digest of a checkpoint: SHA-256 over every "param/" entry in name order, each
// contributing its name, a NUL byte and its little-endian fp32 payload. Equal digests mean
// bitwise-equal weights, however the model was sharded when it was saved.
#pragma once

#include <string>
#include <vector>

#include "worker/checkpoint/shard_store.h"

namespace moerun::checkpoint {

// Lower-case hex of the SHA-256; entries may come from several shards, in any order.
std::string WeightsDigest(const std::vector<const Entry*>& entries);

}  // namespace moerun::checkpoint
