#include <doctest/doctest.h>

#include "common/status.h"

using moerun::Result;
using moerun::Status;

TEST_CASE("Status carries code and message") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "OK");
  Status e = Status::NotFound("checkpoint step 40");
  CHECK_FALSE(e.ok());
  CHECK(e.code() == Status::Code::kNotFound);
  CHECK(e.ToString() == "NotFound: checkpoint step 40");
  CHECK(e.WithContext("restore").message() == "restore: checkpoint step 40");
}

TEST_CASE("Result holds a value or an error") {
  Result<int> v = 7;
  REQUIRE(v.ok());
  CHECK(*v == 7);
  Result<int> e = Status::Corruption("crc");
  CHECK_FALSE(e.ok());
  CHECK(e.status().code() == Status::Code::kCorruption);
}
