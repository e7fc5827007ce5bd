// The data corpus: file listing with exclusions, token shards, the train/validation split and
// deterministic sampling.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/temp_path.h"
#include "worker/data/corpus.h"

namespace fs = std::filesystem;
using moerun::DataFormat;
using moerun::DataSpec;
using moerun::data::Corpus;

namespace {

std::string TempDir(const char* name) {
  return moerun::testing::FreshTempPath("corpus", name, true);
}

void WriteShard(const std::string& path, const std::vector<uint16_t>& tokens,
                int32_t magic = 20240520, int32_t count_override = -1) {
  int32_t header[256] = {};
  header[0] = magic;
  header[1] = 1;
  header[2] = count_override >= 0 ? count_override : int32_t(tokens.size());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 2));
}

}  // namespace

TEST_CASE("text corpus: directories walked in order, exclusions applied") {
  const std::string dir = TempDir("text");
  fs::create_directories(dir + "/sub");
  std::ofstream(dir + "/b.txt") << std::string(20000, 'b');
  std::ofstream(dir + "/sub/a.txt") << std::string(20000, 'a');
  std::ofstream(dir + "/b.dat") << "index";
  DataSpec spec;
  spec.paths = {dir};
  spec.exclude = {"*.dat"};
  spec.val_fraction = 0.25;
  auto c = Corpus::Load(spec, 256, 16);
  REQUIRE(c.ok());
  CHECK(c->files().size() == 2);
  CHECK(c->tokens() == 40000);
  CHECK(c->validation_windows() > 0);
  CHECK(c->train_tokens() < c->tokens());
  // Sampling is a pure function of (seed, step, index) and windows are shifted by one.
  std::vector<int32_t> x1(16), y1(16), x2(16), y2(16);
  c->SampleTrain(5, 3, 7, x1.data(), y1.data());
  c->SampleTrain(5, 3, 7, x2.data(), y2.data());
  CHECK(x1 == x2);
  CHECK(y1 == y2);
  for (int i = 0; i + 1 < 16; ++i) CHECK(y1[i] == x1[i + 1]);
  fs::remove_all(dir);
}

TEST_CASE("token shards: llm.c header checked, tokens below the vocabulary") {
  const std::string dir = TempDir("shards");
  WriteShard(dir + "/good.bin", std::vector<uint16_t>(10000, 7));
  DataSpec spec;
  spec.format = DataFormat::kTokens;
  spec.paths = {dir + "/good.bin"};
  auto ok = Corpus::Load(spec, 50304, 16);
  REQUIRE(ok.ok());
  CHECK(ok->tokens() == 10000);

  WriteShard(dir + "/magic.bin", {1, 2, 3}, 12345);
  spec.paths = {dir + "/magic.bin"};
  auto bad = Corpus::Load(spec, 50304, 16);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("magic.bin: header magic/version 12345/1") !=
        std::string::npos);

  WriteShard(dir + "/count.bin", {1, 2, 3}, 20240520, 99);
  spec.paths = {dir + "/count.bin"};
  CHECK(Corpus::Load(spec, 50304, 16).status().message().find("header says 99 tokens") !=
        std::string::npos);

  WriteShard(dir + "/vocab.bin", std::vector<uint16_t>(100, 300));
  spec.paths = {dir + "/vocab.bin"};
  CHECK(
      Corpus::Load(spec, 256, 16).status().message().find("is not below model.vocab_size (256)") !=
      std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("missing or empty data is a clear error") {
  DataSpec spec;
  spec.paths = {"/nonexistent/data"};
  CHECK(Corpus::Load(spec, 256, 16).status().message() ==
        "data.paths: /nonexistent/data does not exist");
  const std::string dir = TempDir("tiny");
  std::ofstream(dir + "/t.txt") << "short";
  spec.paths = {dir};
  CHECK(Corpus::Load(spec, 256, 16).status().message().find("too few for one training window") !=
        std::string::npos);
  fs::remove_all(dir);
}
