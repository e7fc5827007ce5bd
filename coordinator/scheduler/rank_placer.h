// RankPlacer: which worker daemon runs each trainer rank of a job (docs/architecture.md §5, §6).
//
// Ranks are numbered rank = stage * data + d, and an expert group is `expert` consecutive
// ranks (same stage, consecutive d). Its all-to-all is the busiest traffic of a step, so the
// placer keeps each group on one host whenever some worker has room for the whole group:
//   1. ranks a caller pins (the survivors of a failed generation) stay where they are;
//   2. each remaining group goes whole to the worker with the least free slots that still
//      holds it (best fit, so big holes stay open for big groups), preferring a worker the
//      job already uses;
//   3. a group no worker can hold whole is split over the workers with most free slots.
// Returns nullopt when the free slots are fewer than the ranks to place. Deterministic for a
// given input; pure function, thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moerun::coordinator {

struct PlacementRequest {
  int64_t world = 1;
  int64_t expert = 1;  // ranks per expert group; divides world
  // Free slots per worker id (workers that are alive and accept work).
  std::map<std::string, int64_t> free_slots;
  // Optional: pinned[r] non-empty keeps rank r on that worker (its slot is already counted
  // as used, so it is not taken from free_slots).
  std::vector<std::string> pinned;
};

// worker id per rank.
std::optional<std::vector<std::string>> PlaceRanks(const PlacementRequest& req);

}  // namespace moerun::coordinator
