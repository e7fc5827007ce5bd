// Checkpoint values, the RocksDB shard store, the async writer and the digest.
#include <doctest/doctest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/crc32c.h"
#include "tests/temp_path.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/checkpoint/digest.h"
#include "worker/checkpoint/shard_store.h"

using namespace moerun::checkpoint;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const char* name) { return moerun::testing::FreshTempPath("ckpt", name, true); }

std::vector<Entry> Step(float base) {
  std::vector<float> w = {base, base + 1, base + 2, base + 3, base + 4, base + 5};
  return {Entry::F32("param/a.weight", {2, 3}, w.data(), 6),
          Entry::F32("param/b", {2}, w.data(), 2), Entry::I64("meta/step", int64_t(base))};
}

}  // namespace

TEST_CASE("CRC32C matches the standard check value") {
  CHECK(moerun::Crc32c("123456789", 9) == 0xE3069283u);
  CHECK(moerun::Crc32c("", 0) == 0u);
  std::string big(1000, 'x');
  CHECK(moerun::Crc32c(big.data() + 10, 990, moerun::Crc32c(big.data(), 10)) ==
        moerun::Crc32c(big.data(), 1000));
  CHECK(moerun::Crc32cPortable("123456789", 9) == 0xE3069283u);
}

TEST_CASE("CRC32C: the CPU's instruction and the tables agree at every length and offset") {
  MESSAGE("crc32 instruction: " << std::string(moerun::Crc32cHardware() ? "yes" : "no"));
  std::string data(4099, '\0');
  uint32_t x = 12345;
  for (char& c : data) c = char((x = x * 1103515245u + 12345u) >> 16);
  for (size_t offset : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4092}) {
      CHECK(moerun::Crc32c(data.data() + offset, n, 77u) ==
            moerun::Crc32cPortable(data.data() + offset, n, 77u));
    }
  }
}

TEST_CASE("entry encoding round-trips and refuses damage") {
  Entry e = Step(1)[0];
  std::string v = EncodeEntry(e);
  auto back = DecodeEntry(e.name, v, "here");
  REQUIRE(back.ok());
  CHECK(back->shape == e.shape);
  CHECK(back->bytes == e.bytes);
  std::string flipped = v;
  flipped[20] ^= 1;
  auto bad = DecodeEntry(e.name, flipped, "step 7, entry param/a.weight");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == "step 7, entry param/a.weight: CRC32C mismatch");
  CHECK_FALSE(DecodeEntry(e.name, v.substr(0, 3), "x").ok());
  // A newer format version is named, not misread.
  std::string future = v;
  future[0] = 9;
  uint32_t crc = moerun::Crc32c(future.data(), future.size() - 4);
  std::memcpy(future.data() + future.size() - 4, &crc, 4);
  auto f = DecodeEntry(e.name, future, "x");
  REQUIRE_FALSE(f.ok());
  CHECK(f.status().message().find("entry format version 9") != std::string::npos);
}

TEST_CASE("a step is complete only with its manifest; reads verify every entry") {
  const std::string dir = TempDir("store");
  {
    auto store = ShardStore::Open(dir, true);
    REQUIRE(store.ok());
    REQUIRE(store.value()->WriteStep(10, Step(10)).ok());
    REQUIRE(store.value()->WriteStep(20, Step(20)).ok());
    auto steps = store.value()->CompleteSteps();
    CHECK(steps.value() == std::vector<int64_t>{10, 20});
  }
  {
    // Damage one entry of step 20 and leave an orphan entry of a step 30 without manifest.
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), dir, &db).ok());
    std::string v;
    REQUIRE(db->Get(rocksdb::ReadOptions(), "000000000020/param/b", &v).ok());
    v[v.size() / 2] ^= 0x40;
    REQUIRE(db->Put(rocksdb::WriteOptions(), "000000000020/param/b", v).ok());
    REQUIRE(
        db->Put(rocksdb::WriteOptions(), "000000000030/param/b", EncodeEntry(Step(30)[1])).ok());
    delete db;
  }
  auto store = ShardStore::Open(dir, false);
  REQUIRE(store.ok());
  CHECK(store.value()->CompleteSteps().value() == std::vector<int64_t>{10, 20});
  auto bad = store.value()->ReadStep(20);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("step 20, entry param/b") != std::string::npos);
  CHECK(store.value()->ReadStep(10).ok());
  CHECK(store.value()->ReadStep(30).status().code() == moerun::Status::Code::kNotFound);
  store.value().reset();

  auto run = RunCheckpoints::Open(dir);
  REQUIRE(run.ok());
  std::vector<std::string> refused;
  auto newest = run->NewestReadableStep(&refused);
  REQUIRE(newest.ok());
  CHECK(newest.value() == 10);
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].rfind("step 20: ", 0) == 0);
  fs::remove_all(dir);
}

TEST_CASE("the async writer keeps the newest `keep` steps") {
  const std::string dir = TempDir("writer");
  auto store = ShardStore::Open(dir, true);
  REQUIRE(store.ok());
  std::vector<int64_t> done;
  {
    CheckpointWriter w(store.value().get(), 2, true, Retention::kNewest, [&](const WriteReport& r) {
      CHECK(r.status.ok());
      CHECK(r.retention.ok());
      done.push_back(r.step);
    });
    for (int s = 1; s <= 5; ++s) w.Submit(s, Step(float(s)));
    w.Wait();
  }
  CHECK(done == std::vector<int64_t>{1, 2, 3, 4, 5});
  CHECK(store.value()->CompleteSteps().value() == std::vector<int64_t>{4, 5});
  fs::remove_all(dir);
}

TEST_CASE("under a coordinator, a writer deletes only steps the coordinator let go") {
  for (const bool async : {true, false}) {
    CAPTURE(async);
    const std::string dir = TempDir(async ? "committed-async" : "committed-sync");
    auto store = ShardStore::Open(dir, true);
    REQUIRE(store.ok());
    ShardStore& shard = *store.value();
    CheckpointWriter w(&shard, 2, async, Retention::kCommitted, [&](const WriteReport& r) {
      CHECK(r.status.ok());
      CHECK(r.retention.ok());
    });
    // Steps 10..60 written; nothing said yet: all stay.
    for (int s = 10; s <= 60; s += 10) w.Submit(s, Step(float(s)));
    w.Wait();
    CHECK(shard.CompleteSteps().value() == std::vector<int64_t>{10, 20, 30, 40, 50, 60});
    // Committed and kept: 30 and 40 (50 and 60 never committed: a peer's reports were lost).
    // 50 and 60 stay (they may yet commit), and so do 30 and 40; 10 and 20 go.
    w.SetCommitted({30, 40});
    w.Wait();
    CHECK(shard.CompleteSteps().value() == std::vector<int64_t>{30, 40, 50, 60});
    // The same list again changes nothing; a newer one lets 30 and 50 go with the next write.
    w.SetCommitted({30, 40});
    w.Wait();
    CHECK(shard.CompleteSteps().value() == std::vector<int64_t>{30, 40, 50, 60});
    w.SetCommitted({40, 60});
    w.Submit(70, Step(70));
    w.Wait();
    CHECK(shard.CompleteSteps().value() == std::vector<int64_t>{40, 60, 70});
    fs::remove_all(dir);
  }
}

TEST_CASE("a shard locked by another writer is waited for, then refused as retryable") {
  const std::string dir = TempDir("locked");
  auto first = ShardStore::Open(dir, true);
  REQUIRE(first.ok());
  REQUIRE(first.value()->WriteStep(10, Step(10)).ok());
  // The holder goes within the wait (an earlier generation's writer exiting): the open waits
  // for it, and the step it wrote is there.
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first.value().reset();
  });
  auto second = ShardStore::Open(dir, true);
  release.join();
  REQUIRE(second.ok());
  CHECK(second.value()->CompleteSteps().value() == std::vector<int64_t>{10});
  // It stays: after kShardLockWaitMs a retryable error that names the lock, not Corruption
  // (which would make the coordinator drop a committed step that is fine).
  auto third = ShardStore::Open(dir, true);
  REQUIRE_FALSE(third.ok());
  CHECK(third.status().code() == moerun::Status::Code::kUnavailable);
  CHECK(third.status().message().find("is locked by another process") != std::string::npos);
  second.value().reset();
  fs::remove_all(dir);
}

TEST_CASE("the digest covers weights only, in name order, from any shard split") {
  auto a = Step(1), b = Step(1), c = Step(2);
  std::vector<const Entry*> pa = {&a[0], &a[1], &a[2]}, pb = {&b[2], &b[1], &b[0]},
                            pc = {&c[0], &c[1]};
  CHECK(WeightsDigest(pa) == WeightsDigest(pb));
  CHECK(WeightsDigest(pa).size() == 64);
  CHECK(WeightsDigest(pa) != WeightsDigest(pc));
  std::vector<const Entry*> no_meta = {&a[0], &a[1]};
  CHECK(WeightsDigest(pa) == WeightsDigest(no_meta));
}

namespace {

// The shard's files whose names end with `ext`, newest (highest number) first.
std::vector<fs::path> FilesEndingWith(const std::string& dir, const std::string& ext) {
  std::vector<fs::path> out;
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().extension() == ext) out.push_back(f.path());
  std::sort(out.rbegin(), out.rend());
  return out;
}

}  // namespace

TEST_CASE("a damaged write-ahead log is reported, and the committed steps are all there") {
  const std::string dir = TempDir("damaged-log");
  {
    auto s = ShardStore::Open(dir, true);
    REQUIRE(s.ok());
    REQUIRE(s.value()->WriteStep(10, Step(10)).ok());
    REQUIRE(s.value()->WriteStep(20, Step(20)).ok());
    CHECK(s.value()->damage().empty());
  }
  // Garbage where the log's next record would be.
  const auto logs = FilesEndingWith(dir, ".log");
  REQUIRE(!logs.empty());
  {
    std::ofstream log(logs.front(), std::ios::binary | std::ios::app);
    log << std::string(256, '\xA5');
  }
  auto s = ShardStore::Open(dir, true);
  REQUIRE(s.ok());
  CHECK(s.value()->damage().find("write-ahead log is damaged") != std::string::npos);
  CHECK(s.value()->CompleteSteps().value() == std::vector<int64_t>{10, 20});
  CHECK(s.value()->ReadStep(20).ok());
}

TEST_CASE("a deleted table file: readers refuse the shard, the writer keeps what is intact") {
  const std::string dir = TempDir("deleted-sst");
  {
    auto s = ShardStore::Open(dir, true);
    REQUIRE(s.ok());
    for (int64_t step : {10, 20, 30}) REQUIRE(s.value()->WriteStep(step, Step(float(step))).ok());
  }
  const auto tables = FilesEndingWith(dir, ".sst");
  REQUIRE(tables.size() >= 3);  // each committed step was flushed into its own table file
  fs::remove(tables.front());   // the newest: step 30
  auto reader = ShardStore::Open(dir, false);
  REQUIRE_FALSE(reader.ok());
  CHECK(reader.status().code() == moerun::Status::Code::kCorruption);
  CHECK(reader.status().message().find(dir) != std::string::npos);
  auto writer = ShardStore::Open(dir, true);
  REQUIRE(writer.ok());
  CHECK(writer.value()->damage().find("it is damaged") != std::string::npos);
  auto steps = writer.value()->CompleteSteps();
  REQUIRE(steps.ok());
  CHECK(std::find(steps->begin(), steps->end(), 30) == steps->end());  // gone, not half there
  CHECK(writer.value()->ReadStep(10).ok());
  CHECK_FALSE(writer.value()->ReadStep(30).ok());
}
