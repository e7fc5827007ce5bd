// Checkpoints in memory: MemorySnapshots (worker/checkpoint/memory_snapshots.h) writes a
// rank's state in the background, keeps the newest two, reads them back with every CRC
// checked, and refuses damaged files by name; the coordinator restores the newest step every
// rank holds in memory when each rank stays on its host, says why not otherwise, and falls back
// to disk when a memory snapshot cannot be read.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/temp_path.h"
#include "tests/unit/coordinator_harness.h"
#include "worker/checkpoint/memory_snapshots.h"

namespace moerun {
namespace {

using checkpoint::Entry;
using checkpoint::MemorySnapshots;
using checkpoint::SnapshotKind;
using coordinator::Harness;
using coordinator::JobPhase;
using coordinator::Sent;
using nlohmann::json;

// A rank's state at `step`: three floats and the step, as views.
struct FakeState {
  std::vector<float> w;
  std::vector<checkpoint::EntryView> Views(int64_t step) {
    w = {1.5f, -2.0f, float(step)};
    return {{"param/w", checkpoint::DType::kF32, {3}, w.data(), 12, 0},
            {"meta/step", checkpoint::DType::kI64, {}, nullptr, 8, step}};
  }
};

TEST_CASE("memory snapshots: written in place, the newest three kept, read back whole") {
  const std::string dir = testing::FreshTempPath("memory", "snapshots", true) + "/job";
  auto m = MemorySnapshots::Open(dir, 3);
  REQUIRE(m.ok());
  FakeState st;
  CHECK(m.value()->Held() == std::pair<int64_t, int64_t>{0, 0});
  for (int64_t step : {1, 2, 3, 4}) REQUIRE(m.value()->Write(step, st.Views(step)).ok());
  CHECK(m.value()->Held() == std::pair<int64_t, int64_t>{2, 4});
  CHECK(m.value()->written() == 4);
  auto gone = MemorySnapshots::Read(dir, 3, 1);  // its slot now holds step 4
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.status().message().find("not in " + dir) != std::string::npos);
  for (int64_t step : {2, 3, 4}) {
    auto read = MemorySnapshots::Read(dir, 3, step);
    REQUIRE(read.ok());
    REQUIRE(read->size() == 2);
    CHECK(read->at(0).name == "param/w");
    CHECK(read->at(0).shape == std::vector<int64_t>{3});
    CHECK(read->at(0).f32()[2] == float(step));
    CHECK(read->at(1).i64() == step);
  }
}

TEST_CASE("memory snapshots: a restarted rank keeps the snapshot it restored from") {
  const std::string dir = testing::FreshTempPath("memory", "restart", true);
  FakeState st;
  {
    auto first = MemorySnapshots::Open(dir, 1);
    REQUIRE(first.ok());
    for (int64_t step : {10, 11, 12}) REQUIRE(first.value()->Write(step, st.Views(step)).ok());
  }
  // The next process restores step 12 and trains on: 13 and 14 go over 10 and 11.
  auto second = MemorySnapshots::Open(dir, 1);
  REQUIRE(second.ok());
  CHECK(second.value()->Held() == std::pair<int64_t, int64_t>{0, 0});  // not its own
  for (int64_t step : {13, 14}) REQUIRE(second.value()->Write(step, st.Views(step)).ok());
  CHECK(MemorySnapshots::Read(dir, 1, 12).ok());
  CHECK_FALSE(MemorySnapshots::Read(dir, 1, 10).ok());
  CHECK_FALSE(MemorySnapshots::Read(dir, 1, 11).ok());
  REQUIRE(second.value()->Write(15, st.Views(15)).ok());  // now 12 is the oldest
  CHECK_FALSE(MemorySnapshots::Read(dir, 1, 12).ok());
  CHECK(second.value()->Held() == std::pair<int64_t, int64_t>{13, 15});
}

TEST_CASE("memory snapshots: a flipped or cut slot is refused by name, one mid-write ignored") {
  const std::string dir = testing::FreshTempPath("memory", "damaged", true);
  auto m = MemorySnapshots::Open(dir, 0);
  REQUIRE(m.ok());
  FakeState st;
  REQUIRE(m.value()->Write(7, st.Views(7)).ok());
  const std::string path = MemorySnapshots::SlotPath(dir, 0, 0);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  m.value().reset();  // unmapped: the test writes the file itself from here
  std::string flipped = bytes;
  flipped[flipped.size() - 20] ^= 0x40;  // inside the body
  std::ofstream(path, std::ios::binary | std::ios::trunc) << flipped;
  auto bad = MemorySnapshots::Read(dir, 0, 7);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == Status::Code::kCorruption);
  CHECK(bad.status().message().find(path) != std::string::npos);
  CHECK(bad.status().message().find("fails its CRC") != std::string::npos);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 9);
  CHECK_FALSE(MemorySnapshots::Read(dir, 0, 7).ok());
  // A writer that died mid-copy left step 0 in the header: no reader takes that slot.
  std::string torn = bytes;
  std::memset(torn.data() + 8, 0, 8);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << torn;
  auto none = MemorySnapshots::Read(dir, 0, 7);
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().message().find("is not in") != std::string::npos);
}

TEST_CASE("memory snapshots: a pinned image travels to a replica on another host, checked") {
  const std::string here = testing::FreshTempPath("memory", "pinned", true);
  const std::string there = testing::FreshTempPath("memory", "replica", true);
  FakeState st;
  auto pinned = MemorySnapshots::Open(here, 2, SnapshotKind::kPinned);
  auto replica = MemorySnapshots::Open(there, 2, SnapshotKind::kReplica);  // kept for rank 2
  REQUIRE(pinned.ok());
  REQUIRE(replica.ok());
  for (int64_t step : {10, 20, 30, 40}) {
    REQUIRE(pinned.value()->Write(step, st.Views(step)).ok());
    const std::string_view image = pinned.value()->Image(step);
    REQUIRE(!image.empty());
    REQUIRE(replica.value()->Store(step, image).ok());
  }
  CHECK(pinned.value()->Image(10).empty());  // overwritten by 40
  CHECK(replica.value()->Held() == std::pair<int64_t, int64_t>{20, 40});
  CHECK(std::filesystem::exists(MemorySnapshots::SlotPath(there, 2, 0, SnapshotKind::kReplica)));
  // The copy reads back as the original, by file and by image.
  auto copy = MemorySnapshots::Read(there, 2, 30, SnapshotKind::kReplica);
  REQUIRE(copy.ok());
  CHECK(copy->at(0).f32()[2] == 30.0f);
  auto image = MemorySnapshots::ReadImage(there, 2, 40, SnapshotKind::kReplica);
  REQUIRE(image.ok());
  CHECK(image.value() == std::string(pinned.value()->Image(40)));
  auto parsed = MemorySnapshots::ParseImage(image.value(), 2, 40, "from rank 0");
  REQUIRE(parsed.ok());
  CHECK(parsed->at(1).i64() == 40);
  // What came over the network is checked before it is kept: another rank's or step's, a
  // flipped or cut one is refused by name, and the slots keep what they held.
  auto refused = [&](std::string bad, int rank, int64_t step, const std::string& why) {
    auto m = MemorySnapshots::Open(there, rank, SnapshotKind::kReplica);
    REQUIRE(m.ok());
    Status s = m.value()->Store(step, bad);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK_MESSAGE(s.message().find(why) != std::string::npos, s.message());
  };
  refused(image.value(), 3, 40, "it holds step 40 of rank 2");
  refused(image.value(), 2, 50, "it holds step 40 of rank 2");
  std::string flipped = image.value();
  flipped[flipped.size() - 3] ^= 1;
  refused(flipped, 2, 40, "fails its CRC");
  refused(image.value().substr(0, image->size() - 5), 2, 40, "does not fit");
  refused("short", 2, 40, "shorter than its header");
  CHECK(MemorySnapshots::Read(there, 2, 40, SnapshotKind::kReplica).ok());
  // The kinds are separate files: rank 2's own slots hold none of these.
  CHECK_FALSE(MemorySnapshots::Read(here, 2, 40).ok());
  CHECK(MemorySnapshots::Read(here, 2, 40, SnapshotKind::kPinned).ok());
}

// Worker `a` runs both ranks; rank 0 reports holding memory steps 10-12, rank 1 11-13.
std::string RunningWithMemory(Harness& h) {
  const std::string id = h.Running();
  for (int rank : {0, 1}) {
    h.c().Handle(Harness::Trainer(id, 1, rank),
                 {MessageType::kStepReport,
                  1,
                  id,
                  "t",
                  {{"rank", rank},
                   {"step", 13},
                   {"memory_steps", rank == 0 ? json{10, 12} : json{11, 13}}}});
  }
  return id;
}

void Wait(Harness& h, int64_t ms, const std::vector<std::string>& workers, int slots = 2) {
  for (int64_t t = 0; t < ms; t += 500) {
    h.Advance(500);
    for (const auto& w : workers) h.Beat(w, slots);
    h.c().Tick();
  }
}

TEST_CASE("coordinator: a restart on the same hosts restores the newest step held in memory") {
  Harness h("memory-same");
  const std::string id = RunningWithMemory(h);
  h.c().Handle("cli:9", {MessageType::kQuery, 0, id, "cli", {{"what", "job"}}});
  CHECK(h.Last("cli:9").e.body["memory_step"] == 12);  // the step both ranks hold
  h.Exit("a", id, 1, 1, 1);
  CHECK(h.Job(id).state.phase() == JobPhase::kRecovering);
  CHECK(h.Said(id, "1 steps to redo, from memory step 12"));
  Wait(h, 1000, {"a"});
  const Sent start = h.Last("worker:a", MessageType::kStartTrainers);
  CHECK(start.e.body["restore_step"] == 12);
  CHECK(start.e.body["restore_from_memory"] == true);
  CHECK(h.Said(id, "restoring step 12 from memory"));
  // The snapshot cannot be read after all: the next generation restores from disk.
  h.Exit("a", id, 2, 0, 5);
  CHECK(
      h.Said(id, "the memory snapshot of step 12 is unusable; falling back to the start on disk"));
  Wait(h, 5000, {"a"});
  const Sent third = h.Last("worker:a", MessageType::kStartTrainers);
  CHECK(third.e.generation == 3);
  CHECK(third.e.body["restore_from_memory"] == false);
  CHECK(third.e.body["restore_step"] == -1);
}

TEST_CASE("coordinator: a rank that moves to another host makes the restart use the disk") {
  Harness h("memory-moved");
  const std::string id = RunningWithMemory(h);
  h.Beat("b", 2);  // room elsewhere
  // Worker a dies: its ranks move to b, where their memory snapshots are not.
  for (int i = 0; i < 12; ++i) {
    h.Advance(500);
    h.Beat("b", 2);
    h.c().Tick();
  }
  Wait(h, 2000, {"b"});
  const Sent start = h.Last("worker:b", MessageType::kStartTrainers);
  CHECK(start.e.body["restore_from_memory"] == false);
  bool said = false;
  for (const auto& e : h.Job(id).state.events())
    said = said || e.cause.find(
                       "memory snapshots of step 12 cannot be used (rank 0 moved from "
                       "a to b)") != std::string::npos;
  CHECK(said);
}

// A 2-rank job on workers a and b (one slot each) whose ranks report `report` (memory_steps,
// replica_steps) at step 23; then rank 1's host goes silent and spare c joins, so rank 1 moves
// to c and rank 0 stays. Returns the job id.
std::string RankOneMoves(Harness& h, const json& report) {
  h.Beat("a", 1);
  h.Beat("b", 1);
  const std::string id = h.Submit("small")["job_id"];
  const std::string stays = h.Job(id).ranks[0].worker;
  REQUIRE(stays != h.Job(id).ranks[1].worker);
  h.Rendezvous(id, 1, 0);
  h.Rendezvous(id, 1, 1);
  for (int rank : {0, 1}) {
    json body = {{"rank", rank}, {"step", 23}};
    body.update(report);
    h.c().Handle(Harness::Trainer(id, 1, rank), {MessageType::kStepReport, 1, id, "t", body});
  }
  h.Beat("c", 1);
  Wait(h, 6000, {stays, "c"}, 1);
  REQUIRE(h.Job(id).ranks[1].worker == "c");
  return id;
}

TEST_CASE("coordinator: a rank that moves restores from its copy on a host that stayed") {
  Harness h("memory-replica");
  const std::string id = RankOneMoves(h, {{"memory_steps", {21, 23}}, {"replica_steps", {10, 20}}});
  const std::string on0 = h.Job(id).ranks[0].worker;
  // Each kept the other's copies.
  CHECK(h.Last("worker:" + on0, MessageType::kStartTrainers).e.body["replica_to"] == json{1, 0});
  const Sent start = h.Last("worker:c", MessageType::kStartTrainers);
  CHECK(start.e.body["restore_step"] == 20);
  CHECK(start.e.body["restore_from_memory"] == true);
  CHECK(start.e.body["replica_fetch"] == json{-1, 0});  // rank 1 fetches from rank 0
  CHECK(h.Said(id, "restoring step 20 from memory: rank 1 from its copy on " + on0 +
                       " (rank 0), the others on their hosts (newest on disk: the start; 3 more "
                       "steps to redo than from the newest snapshot in memory)"));
  // No copies reported (replicas off, or none made yet): a moved rank means the disk.
  Harness g("memory-no-replica");
  const std::string id2 = RankOneMoves(g, {{"memory_steps", {21, 23}}});
  CHECK(g.Last("worker:c", MessageType::kStartTrainers).e.body["restore_from_memory"] == false);
  CHECK(g.Said(id2, "memory snapshots of step 23 cannot be used (rank 1 moved from"));
}

TEST_CASE("coordinator: a daemon that holds memory snapshots of a job that is over is told so") {
  Harness h("memory-leftover");
  const std::string id = h.Running();
  auto beat = [&](json memory_jobs) {
    h.sent.clear();
    h.Beat("a", 2, json::array(), {{"memory_jobs", memory_jobs}});
  };
  // A running job's snapshots stay; one the coordinator never ran goes; entries that are not
  // job ids cost only themselves (the heartbeat still counts).
  beat(json::array({id, "gone-7", 42}));
  CHECK(h.Count(MessageType::kStopTrainers, "worker:a") == 1);
  const Sent stop = h.Last("worker:a", MessageType::kStopTrainers);
  CHECK(stop.e.job_id == "gone-7");
  CHECK(stop.e.body["below_generation"] == UINT64_MAX);
  CHECK(h.Count(MessageType::kReply, "worker:a") == 1);
  // Once the job is over, its snapshots go too.
  h.c().Handle("cli:2", {MessageType::kCancelJob, 0, id, "cli", json::object()});
  REQUIRE(IsTerminal(h.Job(id).state.phase()));
  beat(json::array({id}));
  CHECK(h.Last("worker:a", MessageType::kStopTrainers).e.job_id == id);
}

}  // namespace
}  // namespace moerun
