// The coordinator's RocksDB state: jobs survive a reopen, metrics page by step, manifests
// commit and list in order, and damaged or future-format records are refused by key.
#include <doctest/doctest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>

#include "coordinator/state/coordinator_store.h"
#include "coordinator/state/metric_retention.h"
#include "tests/temp_path.h"

using moerun::Status;
using moerun::coordinator::CoordinatorStore;
using moerun::coordinator::JobPhase;
using moerun::coordinator::JobState;
using moerun::coordinator::KeepMetricStep;
namespace fs = std::filesystem;

namespace {

std::string Dir(const char* name) { return moerun::testing::FreshTempPath("store", name, false); }

}  // namespace

TEST_CASE("metric retention keeps recent steps whole and older ones geometrically thinner") {
  // Age < R: everything; [R, 2R): even steps; [2R, 4R): multiples of 4; and so on.
  for (int64_t s = 900; s <= 1000; ++s) CHECK(KeepMetricStep(s, 1000, 100));
  CHECK(KeepMetricStep(850, 1000, 100));
  CHECK_FALSE(KeepMetricStep(851, 1000, 100));
  CHECK(KeepMetricStep(700, 1000, 100));
  CHECK_FALSE(KeepMetricStep(702, 1000, 100));
  CHECK(KeepMetricStep(400, 1000, 100));
  CHECK_FALSE(KeepMetricStep(404, 1000, 100));
  // Monotone: once dropped, dropped for every later newest step.
  int64_t revived = 0;
  for (int64_t s = 1; s <= 3000; ++s) {
    bool dropped = false;
    for (int64_t newest = s; newest <= 6000; newest += 7) {
      const bool keep = KeepMetricStep(s, newest, 100);
      revived += dropped && keep ? 1 : 0;
      dropped = dropped || !keep;
    }
  }
  CHECK(revived == 0);
  // Bounded: about R + R/2 per doubling of the run.
  int64_t kept = 0;
  const int64_t newest = 1'000'000;
  for (int64_t s = 1; s <= newest; ++s) kept += KeepMetricStep(s, newest) ? 1 : 0;
  CHECK(kept < 7000);
  CHECK(kept > 5000);
}

TEST_CASE("thinning the store drops exactly what retention no longer keeps") {
  const std::string dir = Dir("thin");
  auto s = CoordinatorStore::Open(dir);
  REQUIRE(s.ok());
  const int64_t last = 5000;
  int64_t dropped = 0;
  const std::vector<std::string> layers = {"1", "2"};
  for (int64_t step = 1; step <= last; ++step) {
    REQUIRE(s.value()
                ->PutMetric("j", step, {{"step", step}}, {{"1", {step, 1}}, {"2", {2, step}}})
                .ok());
    if (step % moerun::coordinator::kMetricThinEverySteps == 0)
      dropped += s.value()->ThinMetrics("j", step, layers).value();
  }
  dropped += s.value()->ThinMetrics("j", last, layers).value();
  auto all = s.value()->Metrics("j", 0, 100000);
  REQUIRE(all.ok());
  std::vector<int64_t> expected, stored;
  for (int64_t step = 1; step <= last; ++step)
    if (KeepMetricStep(step, last)) expected.push_back(step);
  for (const auto& m : all.value()) stored.push_back(m["step"].get<int64_t>());
  CHECK(stored == expected);
  CHECK(dropped == last - int64_t(expected.size()));
  // Each layer's load went with its step's report.
  for (const auto& layer : layers) {
    auto load = s.value()->ExpertLoad("j", layer, 0, 100000);
    REQUIRE(load.ok());
    CHECK(load->steps == expected);
  }
  auto tail = s.value()->ExpertLoad("j", "2", last - 3, 2);
  REQUIRE(tail.ok());
  CHECK(tail->steps == std::vector<int64_t>{last - 2, last - 1});
  CHECK(tail->load[1] == std::vector<int64_t>{2, last - 1});
  CHECK(s.value()->LastMetric("j").value()["step"] == last);
  // A restart from step last - 10 drops the reports after it, and their load.
  REQUIRE(s.value()->DeleteMetricsAfter("j", last - 10, layers).ok());
  CHECK(s.value()->LastMetric("j").value()["step"] == last - 10);
  CHECK(s.value()->ExpertLoad("j", "1", last - 11, 100)->steps == std::vector<int64_t>{last - 10});
  // Another job's reports are untouched.
  REQUIRE(s.value()->PutMetric("k", 3, {{"step", 3}}).ok());
  CHECK(s.value()->ThinMetrics("j", last).value() == 0);
  CHECK(s.value()->Metrics("k", 0, 10)->size() == 1);
  fs::remove_all(dir);
}

TEST_CASE("jobs, specs, metrics and manifests survive closing and reopening") {
  const std::string dir = Dir("reopen");
  {
    auto s = CoordinatorStore::Open(dir);
    REQUIRE(s.ok());
    JobState a("alpha", {}, 1), b("beta", {}, 2);
    REQUIRE(b.Start(3, "placed").ok());
    REQUIRE(s.value()->PutJob(a).ok());
    REQUIRE(s.value()->PutJob(b).ok());
    REQUIRE(s.value()->PutSpec("beta", "job:\n  name: beta\n").ok());
    for (int step = 1; step <= 30; ++step)
      REQUIRE(
          s.value()->PutMetric("beta", step, {{"step", step}, {"loss", 5.0 - step * 0.1}}).ok());
    for (int step : {20, 10, 30})
      REQUIRE(s.value()->CommitManifest("beta", step, {{"shards", 4}, {"step", step}}).ok());
  }
  auto s = CoordinatorStore::Open(dir);
  REQUIRE(s.ok());
  auto jobs = s.value()->LoadJobs();
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 2);
  CHECK(jobs.value()[0].job_id() == "alpha");
  CHECK(jobs.value()[1].phase() == JobPhase::kStarting);
  CHECK(s.value()->GetSpec("beta").value() == "job:\n  name: beta\n");
  CHECK(s.value()->GetSpec("gamma").status().code() == Status::Code::kNotFound);
  auto page = s.value()->Metrics("beta", 25, 100);
  REQUIRE(page.ok());
  REQUIRE(page->size() == 5);
  CHECK(page.value()[0]["step"] == 26);
  CHECK(s.value()->Metrics("beta", 0, 7)->size() == 7);
  CHECK(s.value()->CommittedSteps("beta").value() == std::vector<int64_t>{10, 20, 30});
  REQUIRE(s.value()->DeleteManifest("beta", 10).ok());
  CHECK(s.value()->CommittedSteps("beta").value() == std::vector<int64_t>{20, 30});
  CHECK(s.value()->Manifest("beta", 30).value()["shards"] == 4);
  fs::remove_all(dir);
}

TEST_CASE("damaged and future-format records are refused by key") {
  const std::string dir = Dir("damage");
  {
    auto s = CoordinatorStore::Open(dir);
    REQUIRE(s.ok());
    REQUIRE(s.value()->PutJob(JobState("alpha", {}, 1)).ok());
  }
  {
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), dir, &db).ok());
    std::string v;
    REQUIRE(db->Get(rocksdb::ReadOptions(), "job/alpha", &v).ok());
    v[10] ^= 0x20;
    REQUIRE(db->Put(rocksdb::WriteOptions(), "job/alpha", v).ok());
    REQUIRE(db->Put(rocksdb::WriteOptions(), "spec/beta",
                    std::string("\x07\x00\x00\x00\x00\x00yaml", 10))
                .ok());
    delete db;
  }
  auto s = CoordinatorStore::Open(dir);
  REQUIRE(s.ok());
  CHECK(s.value()->LoadJobs().status().message() == "coordinator state job/alpha: CRC32C mismatch");
  CHECK(s.value()->GetSpec("beta").status().message() ==
        "coordinator state spec/beta: value format version 7; this build reads 1");
  fs::remove_all(dir);
}
