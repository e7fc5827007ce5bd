// RunRoots: with roots, a path at or below one passes and others are refused naming the
// field and the roots; without, system directories are refused; paths are normalized first.
#include <doctest/doctest.h>

#include <string>

#include "coordinator/service/run_roots.h"

using moerun::coordinator::RunRoots;

TEST_CASE("run roots: below a root, or refused with the field and the roots") {
  auto roots = RunRoots::Create({"/shared/runs/", "/scratch"});
  REQUIRE(roots.ok());
  CHECK(roots->Check("run_dir", "/shared/runs").ok());
  CHECK(roots->Check("run_dir", "/shared/runs/job-1").ok());
  CHECK(roots->Check("checkpoint.dir", "/scratch/ckpt/a").ok());
  const auto sibling = roots->Check("run_dir", "/shared/runs2/job");  // not below /shared/runs
  REQUIRE_FALSE(sibling.ok());
  CHECK(sibling.message().find("run_dir /shared/runs2/job is outside") == 0);
  CHECK(sibling.message().find("--allowed-run-roots /shared/runs, /scratch") != std::string::npos);
  const auto escape = roots->Check("checkpoint.dir", "/shared/runs/../../etc/cron.d");
  REQUIRE_FALSE(escape.ok());
  CHECK(escape.message().find("checkpoint.dir /etc/cron.d is outside") == 0);
  CHECK_FALSE(roots->Check("run_dir", "relative/dir").ok());
  CHECK_FALSE(RunRoots::Create({"not/absolute"}).ok());
}

TEST_CASE("run roots: without any, system directories are refused") {
  auto none = RunRoots::Create({});
  REQUIRE(none.ok());
  CHECK(none->Check("run_dir", "/tmp/run").ok());
  CHECK(none->Check("run_dir", "/home/me/runs/a").ok());
  CHECK(none->Check("run_dir", "/etcetera/run").ok());  // whole components only
  const auto cron = none->Check("run_dir", "/etc/cron.d");
  REQUIRE_FALSE(cron.ok());
  CHECK(cron.message().find("run_dir /etc/cron.d is in /etc, a system directory") == 0);
  CHECK_FALSE(none->Check("checkpoint.dir", "/usr/lib/x").ok());
  CHECK_FALSE(none->Check("run_dir", "/").ok());
  CHECK_FALSE(none->Check("run_dir", "/tmp/../boot/x").ok());
}
