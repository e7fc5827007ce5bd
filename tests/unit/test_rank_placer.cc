// RankPlacer: expert groups stay on one host when some worker holds them whole, survivors
// keep their workers on a restart, and a job that does not fit is refused.
#include <doctest/doctest.h>

#include "coordinator/scheduler/rank_placer.h"

using moerun::coordinator::PlacementRequest;
using moerun::coordinator::PlaceRanks;
using V = std::vector<std::string>;

TEST_CASE("expert groups go whole to one worker, best fit first") {
  PlacementRequest req;
  req.world = 4;
  req.expert = 2;
  req.free_slots = {{"a", 2}, {"b", 2}};
  CHECK(PlaceRanks(req).value() == V{"a", "a", "b", "b"});
  // A worker with room for exactly one group takes it; the big one keeps its room.
  req.free_slots = {{"big", 8}, {"small", 2}};
  CHECK(PlaceRanks(req).value() == V{"small", "small", "big", "big"});
  // Three slots each: a group never straddles two workers when one can hold it.
  req.world = 6;
  req.expert = 3;
  req.free_slots = {{"a", 4}, {"b", 3}};
  CHECK(PlaceRanks(req).value() == V{"b", "b", "b", "a", "a", "a"});
}

TEST_CASE("a group no worker can hold whole is split over the emptiest workers") {
  PlacementRequest req;
  req.world = 4;
  req.expert = 4;
  req.free_slots = {{"a", 1}, {"b", 3}};
  CHECK(PlaceRanks(req).value() == V{"b", "b", "b", "a"});
}

TEST_CASE("not enough free slots: no placement") {
  PlacementRequest req;
  req.world = 4;
  req.expert = 1;
  req.free_slots = {{"a", 1}, {"b", 2}};
  CHECK_FALSE(PlaceRanks(req).has_value());
  req.free_slots["c"] = 1;
  CHECK(PlaceRanks(req).has_value());
  req.expert = 3;  // does not divide the world
  CHECK_FALSE(PlaceRanks(req).has_value());
}

TEST_CASE("pinned ranks stay; only the lost ones move") {
  PlacementRequest req;
  req.world = 4;
  req.expert = 2;
  req.free_slots = {{"spare", 2}, {"b", 0}};
  req.pinned = {"", "", "b", "b"};  // worker a died; b still holds ranks 2 and 3
  CHECK(PlaceRanks(req).value() == V{"spare", "spare", "b", "b"});
}
