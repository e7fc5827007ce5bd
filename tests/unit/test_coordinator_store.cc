// The coordinator's RocksDB state: jobs survive a reopen, metrics page by step, manifests
// commit and list in order, and damaged or future-format records are refused by key.
#include <doctest/doctest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>

#include "coordinator/state/coordinator_store.h"
#include "tests/temp_path.h"

using moerun::Status;
using moerun::coordinator::CoordinatorStore;
using moerun::coordinator::JobPhase;
using moerun::coordinator::JobState;
namespace fs = std::filesystem;

namespace {

std::string Dir(const char* name) { return moerun::testing::FreshTempPath("store", name, false); }

}  // namespace

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
