#include <doctest/doctest.h>

#include "common/exit_codes.h"
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

TEST_CASE("ExitCodeFor: one exit code per kind of failure") {
  using moerun::ExitCodeFor;
  CHECK(ExitCodeFor(Status::OK()) == moerun::kExitOk);
  CHECK(ExitCodeFor(Status::InvalidArgument("x")) == moerun::kExitInvalidConfig);
  CHECK(ExitCodeFor(Status::DataLoss("x")) == moerun::kExitBadData);
  CHECK(ExitCodeFor(Status::Unimplemented("x")) == moerun::kExitUnsupported);
  CHECK(ExitCodeFor(Status::Corruption("x")) == moerun::kExitBadCheckpoint);
  CHECK(ExitCodeFor(Status::Cancelled("x")) == moerun::kExitInterrupted);
  // A peer gone, a timeout or memory that ran out may pass on a restart: retried.
  for (const Status& s :
       {Status::TimedOut("x"), Status::Aborted("x"), Status::Unavailable("x"), Status::IOError("x"),
        Status::ResourceExhausted("x"), Status::Internal("x"), Status::NotFound("x")}) {
    CHECK(ExitCodeFor(s) == moerun::kExitFailure);
    CHECK_FALSE(moerun::IsNonRetryableExit(ExitCodeFor(s)));
  }
  CHECK(Status::ResourceExhausted("x").ToString() == "ResourceExhausted: x");
  CHECK(Status::Cancelled("x").ToString() == "Cancelled: x");
  CHECK(Status::DataLoss("x").ToString() == "DataLoss: x");
}
