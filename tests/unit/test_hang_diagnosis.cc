// Finding hangs: FlightRecorder (worker/comm/flight_recorder.h) round-trips its ring through
// its file, wraps, and refuses files it cannot read; DiagnoseHang
// (coordinator/jobs/hang_diagnosis.h) names the rank that did not arrive from made-up records.
#include <doctest/doctest.h>

#include <fstream>

#include "coordinator/jobs/hang_diagnosis.h"
#include "tests/temp_path.h"
#include "worker/comm/flight_recorder.h"

namespace moerun {
namespace {

using comm::FlightOp;
using comm::FlightRecorder;
using nlohmann::json;

TEST_CASE("flight recorder: entries round-trip through the file, newest last, and wrap") {
  const std::string dir = testing::FreshTempPath("flight", "ring", true);
  auto rec = FlightRecorder::Create(dir + "/r3.flight", 3, 4);
  REQUIRE(rec.ok());
  for (int i = 1; i <= 6; ++i) {
    const uint64_t seq = rec.value()->Begin(FlightOp::kAllReduce, "data/0", uint64_t(i), 1, 2, -1,
                                            uint64_t(100 * i));
    if (i < 6) rec.value()->End(seq, i != 5);
  }
  auto read = FlightRecorder::Read(dir + "/r3.flight");
  REQUIRE(read.ok());
  CHECK(read->rank == 3);
  CHECK(read->written == 6);
  REQUIRE(read->entries.size() == 4);  // the ring holds the newest four
  CHECK(read->entries.front().seq == 3);
  const auto& last = read->entries.back();
  CHECK(last.seq == 6);
  CHECK(last.group == "data/0");
  CHECK(last.bytes == 600);
  CHECK(last.end_ns == 0);           // still running
  CHECK_FALSE(read->entries[2].ok);  // #5 failed
  const json j = last.ToJson(FlightRecorder::NowNs());
  CHECK(j["op"] == "all_reduce");
  CHECK(j["running"] == true);
  auto newest = FlightRecorder::Read(dir + "/r3.flight", 2);
  REQUIRE(newest.ok());
  CHECK(newest->entries.size() == 2);
}

TEST_CASE("flight recorder: a missing or foreign file is an error naming it") {
  const std::string dir = testing::FreshTempPath("flight", "bad", true);
  auto missing = FlightRecorder::Read(dir + "/none.flight");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().find(dir + "/none.flight") != std::string::npos);
  std::ofstream(dir + "/junk.flight") << std::string(200, 'x');
  auto junk = FlightRecorder::Read(dir + "/junk.flight");
  REQUIRE_FALSE(junk.ok());
  CHECK(junk.status().message().find("not a version 1 recorder") != std::string::npos);
}

json Entry(const std::string& op, const std::string& group, int64_t group_seq, bool running,
           double age_ms, double took_ms = 1) {
  json e = {{"op", op}, {"group", group}, {"group_seq", group_seq}, {"age_ms", age_ms}};
  if (running)
    e["running"] = true;
  else
    e["took_ms"] = took_ms;
  return e;
}

TEST_CASE("hang diagnosis: the rank outside the data plane did not arrive") {
  // Ranks 0, 1, 3 wait in the 12th all-reduce of data/0; rank 2 finished its 11th long ago.
  json ranks = json::object();
  for (int r : {0, 1, 3}) {
    ranks[std::to_string(r)] = {Entry("all_reduce", "data/0", 11, false, 15000),
                                Entry("all_reduce", "data/0", 12, true, 14900)};
  }
  ranks["2"] = {Entry("all_reduce", "data/0", 11, false, 15000, 2)};
  const std::string d = coordinator::DiagnoseHang(ranks, 4);
  CHECK(d.find("rank 2 did not arrive: ranks 0, 1, 3 wait in all_reduce data/0 #12 (14.9 s)") == 0);
  CHECK(d.find("rank 2 is not in the data plane (its last call, all_reduce data/0 #11, ended "
               "15.0 s ago)") != std::string::npos);
}

TEST_CASE("hang diagnosis: waits that timed out still count as waits") {
  // The peers' data-plane timeouts ended their calls (ok false) before the diagnosis.
  json ranks = json::object();
  for (int r : {0, 1}) {
    json e = Entry("all_reduce", "data/0", 12, false, 5100, 5000);
    e["ok"] = false;
    ranks[std::to_string(r)] = {e};
  }
  ranks["2"] = {Entry("all_reduce", "data/0", 11, false, 5200, 2)};
  const std::string d = coordinator::DiagnoseHang(ranks, 3);
  CHECK(d.find("rank 2 did not arrive: ranks 0, 1 wait in all_reduce data/0 #12") == 0);
}

TEST_CASE("hang diagnosis: a group member waiting elsewhere, and a rank with no answer") {
  json ranks = json::object();
  ranks["0"] = {Entry("all_to_all", "expert/0/0", 7, true, 9000)};
  ranks["1"] = {Entry("recv", "world", 3, true, 8000)};
  ranks["0"].insert(ranks["0"].begin(), Entry("all_to_all", "expert/0/0", 6, false, 9500));
  ranks["1"].insert(ranks["1"].begin(), Entry("all_to_all", "expert/0/0", 6, false, 9500));
  std::string d = coordinator::DiagnoseHang(ranks, 3);
  CHECK(d.find("rank 1 did not arrive: rank 0 waits in all_to_all expert/0/0 #7 (9.0 s)") == 0);
  CHECK(d.find("rank 1 waits in recv world #3") != std::string::npos);
  // Nobody records anything for rank 2 (its daemon is gone): it is named as silent.
  CHECK(coordinator::DiagnoseHang(json::object(), 1).find("rank 0 has no record") !=
        std::string::npos);
}

}  // namespace
}  // namespace moerun
