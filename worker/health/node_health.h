// CheckNodeHealth: `moerun-worker --health-check` (docs/cluster.md, "Node health"), a short
// self-test of what a trainer needs from its host, fit for Slurm's HealthCheckProgram:
//   gemm        an fp32 GEMM through the trainers' own kernels (oneDNN), its result checked
//               against a float64 reference at sampled entries, its speed against a floor;
//   data plane  two ranks in this process, each a CURVE-encrypted ZeroMQ endpoint on the
//               data host (the address trainers bind), all-reduce a buffer and check every
//               element;
//   gpus        with expect_gpus > 0, that many /dev/nvidiaN device files.
// Takes about a second. Not thread-safe (it sets the BLAS thread count).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moerun::worker {

struct HealthCheckOptions {
  // GEMM: an n x n x n product, the best of `repeats` timed runs on `threads` threads. A node
  // below min_gemm_gflops is unhealthy (the default is a floor that only a broken or badly
  // throttled core misses; set it to about half of what healthy nodes show).
  int64_t gemm_n = 512;
  int repeats = 5;
  int threads = 1;
  double min_gemm_gflops = 5.0;
  // Data plane: this many float32 elements all-reduced between two local ranks bound on
  // data_host, within timeout_ms.
  std::string data_host = "127.0.0.1";
  int64_t allreduce_elements = 1 << 20;
  int64_t timeout_ms = 10000;
  int64_t expect_gpus = 0;
  std::string dev_dir = "/dev";  // where /dev/nvidiaN live (tests point it elsewhere)
};

struct HealthReport {
  bool healthy = true;
  std::vector<std::string> problems;  // for people and Slurm's drain reason; empty if healthy
  double gemm_gflops = 0, gemm_max_rel_error = 0;
  double allreduce_gbps = 0;  // algorithm bandwidth: bytes reduced / time
  int64_t gpus_found = -1;    // -1: not checked
  double seconds = 0;         // the whole check
  nlohmann::json ToJson() const;
};

HealthReport CheckNodeHealth(const HealthCheckOptions& opts);

// An fp32 n x n x n GEMM through the trainers' kernels on the calling thread's BLAS settings:
// the best GFLOP/s of `repeats` timed runs (after one to warm up), gap_ms apart (so that a
// moment's contention for the core does not spoil them all), each slowed by extra_ms (fault
// injection: MOERUN_FAULT_SLOW's gemm_ms), and the largest relative error of sampled entries
// against float64.
struct GemmMeasure {
  double gflops = 0;
  double max_rel_error = 0;
};
GemmMeasure MeasureGemm(int64_t n, int repeats, int64_t extra_ms = 0, int64_t gap_ms = 0);

}  // namespace moerun::worker
