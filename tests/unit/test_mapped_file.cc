// MappedFile (common/mapped_file.h): each mode on a real file, bytes shared between two
// mappings, and the errors that name the file.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/mapped_file.h"
#include "tests/temp_path.h"

namespace moerun {
namespace {

using Mode = MappedFile::Mode;

TEST_CASE("mapped file: created zeroed, shared between mappings, resized keeping its bytes") {
  const std::string dir = testing::FreshTempPath("mapped-file", "modes", true);
  const std::string path = dir + "/f";
  auto a = MappedFile::Map(path, Mode::kCreate, 4096, "test file");
  REQUIRE(a.ok());
  CHECK(a->size() == 4096);
  CHECK(std::filesystem::file_size(path) == 4096);
  CHECK(static_cast<const char*>(a->data())[100] == 0);
  std::memcpy(a->data(), "shared", 6);
  auto b = MappedFile::Map(path, Mode::kReadOnly, 0, "test file");
  REQUIRE(b.ok());
  CHECK(b->size() == 4096);  // the whole file
  CHECK(std::memcmp(b->data(), "shared", 6) == 0);
  std::memcpy(static_cast<char*>(a->data()) + 4090, "tail", 4);
  CHECK(std::memcmp(static_cast<const char*>(b->data()) + 4090, "tail", 4) == 0);
  // Resize keeps what the file holds; Create truncates it.
  auto c = MappedFile::Map(path, Mode::kResize, 8192, "test file");
  REQUIRE(c.ok());
  CHECK(std::memcmp(c->data(), "shared", 6) == 0);
  CHECK(static_cast<const char*>(c->data())[8000] == 0);
  auto d = MappedFile::Map(path, Mode::kCreate, 16, "test file");
  REQUIRE(d.ok());
  CHECK(static_cast<const char*>(d->data())[0] == 0);
  // Moved, the mapping goes with it; unmapped once.
  MappedFile moved = std::move(d.value());
  CHECK(moved.mapped());
  CHECK_FALSE(d->mapped());
  moved.Unmap();
  CHECK_FALSE(moved.mapped());
}

TEST_CASE("mapped file: missing, short and empty files are errors that name them") {
  const std::string dir = testing::FreshTempPath("mapped-file", "errors", true);
  auto missing = MappedFile::Map(dir + "/none", Mode::kReadOnly, 0, "beat file");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == Status::Code::kNotFound);
  CHECK(missing.status().message().rfind("beat file " + dir + "/none: ", 0) == 0);
  CHECK(MappedFile::Map(dir + "/none", Mode::kReadWrite, 8, "beat file").status().code() ==
        Status::Code::kIOError);
  std::ofstream(dir + "/short") << "abc";
  auto short_file = MappedFile::Map(dir + "/short", Mode::kReadWrite, 64, "beat file");
  REQUIRE_FALSE(short_file.ok());
  CHECK(short_file.status().code() == Status::Code::kCorruption);
  CHECK(short_file.status().message() == "beat file " + dir + "/short is shorter than 64 bytes");
  std::ofstream(dir + "/empty").flush();
  CHECK(MappedFile::Map(dir + "/empty", Mode::kReadOnly, 0, "x").status().code() ==
        Status::Code::kCorruption);
  auto no_dir = MappedFile::Map(dir + "/no/such/dir", Mode::kCreate, 64, "memory snapshot");
  REQUIRE_FALSE(no_dir.ok());
  CHECK(no_dir.status().message().find("memory snapshot " + dir + "/no/such/dir") == 0);
}

}  // namespace
}  // namespace moerun
