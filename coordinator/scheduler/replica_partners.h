// ReplicaPartners: which rank keeps a copy of each rank's pinned memory snapshots
// (checkpoint.memory_replica_interval_steps; docs/fault-tolerance.md, "Checkpoints in memory").
//
// The copy must live on another host, or losing the host loses both. Ranks are listed grouped
// by worker (workers in order of first appearance, ranks ascending within each), and each rank
// sends to the one `g` places further round the list, where g is the largest group: with equal
// groups that is the same position on the next worker, so the copies form a ring of hosts and
// every rank receives exactly one copy (the exchange is one send and one receive per rank).
// When that would put some copy on its own host (unequal groups) or the job runs on one
// worker, no rank gets a partner: all -1. Pure function, thread-safe.
#pragma once

#include <string>
#include <vector>

namespace moerun::coordinator {

// placement[r]: the worker of rank r. Returns to[r]: the rank that keeps r's copies, or all -1.
std::vector<int> ReplicaPartners(const std::vector<std::string>& placement);

// The inverse: holder[r] is the rank that keeps r's copies (-1 when `to` gives r none).
std::vector<int> ReplicaHolders(const std::vector<int>& to);

}  // namespace moerun::coordinator
