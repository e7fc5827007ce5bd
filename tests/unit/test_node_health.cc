// The node self-test behind `moerun-worker --health-check` (worker/health/node_health.h): a
// healthy host passes, and each check, made to fail, names itself and why.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "tests/temp_path.h"
#include "worker/health/node_health.h"

namespace moerun::worker {
namespace {

HealthCheckOptions Quick() {
  HealthCheckOptions o;
  o.gemm_n = 128;
  o.repeats = 2;
  o.min_gemm_gflops = 0.01;
  o.allreduce_elements = 1 << 14;
  return o;
}

TEST_CASE("a healthy host passes: a correct GEMM, an all-reduce over CURVE on the data host") {
  const HealthReport r = CheckNodeHealth(Quick());
  CHECK_MESSAGE(r.healthy, r.ToJson().dump());
  CHECK(r.gemm_gflops > 0);
  CHECK(r.gemm_max_rel_error < 1e-4);
  CHECK(r.allreduce_gbps > 0);
  CHECK(r.gpus_found == -1);
  CHECK(r.ToJson()["healthy"] == true);
}

TEST_CASE("a slow GEMM, an address the data plane cannot bind, missing GPUs: each named") {
  HealthCheckOptions o = Quick();
  o.min_gemm_gflops = 1e9;
  o.data_host = "192.0.2.1";  // TEST-NET-1: no interface here has it
  const std::string dev = testing::FreshTempPath("health", "dev", true);
  std::ofstream(dev + "/nvidia0") << "";
  std::ofstream(dev + "/nvidiactl") << "";  // not a GPU
  o.dev_dir = dev;
  o.expect_gpus = 2;
  const HealthReport r = CheckNodeHealth(o);
  CHECK(!r.healthy);
  REQUIRE(r.problems.size() == 3);
  CHECK(r.problems[0].find("gemm: ") == 0);
  CHECK(r.problems[0].find("below the floor") != std::string::npos);
  CHECK(r.problems[1].find("data plane: cannot bind on 192.0.2.1") == 0);
  CHECK(r.problems[2] == "gpus: 1 of 2 /dev/nvidiaN devices present");
  CHECK(r.gpus_found == 1);
}

}  // namespace
}  // namespace moerun::worker
