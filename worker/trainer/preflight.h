// Pre-flight (docs/cluster.md, "Pre-flight"): what each rank of a job's first generation
// checks before it trains, when fault_tolerance.preflight is on and a coordinator started it.
// Every rank times a short GEMM (256^3 fp32, best of 10) and exchanges 1 MiB with a partner,
// three times each way, in two pairings: first r with r^1, then odd r with r+1 and even r with
// r-1 (wrapping around when the world is even), so that each rank meets two different
// partners and the coordinator can tell a bad node (both of its pairings bad) from a bad pair
// (one). The result goes to the coordinator, which judges the ranks together; training does
// not wait for it. Collective over the world: every rank calls it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/comm/communicator.h"

namespace moerun::trainer {

struct PreflightPair {
  int partner = -1;
  double gbps = 0;    // bytes sent and received over the time, GB/s
  std::string error;  // empty: the exchange succeeded and every byte checked
};

struct PreflightResult {
  double gemm_gflops = 0;
  std::vector<PreflightPair> pairs;  // one per pairing this rank takes part in (0-2)
  nlohmann::json ToJson() const;     // the PreflightReport body, less the rank
};

// The partner of `rank` in pairing `round` (0 or 1) of a world of `world`; -1: none.
int PreflightPartner(int rank, int world, int round);

// gemm_extra_ms: fault injection (MOERUN_FAULT_SLOW's gemm_ms), added to every timed GEMM.
PreflightResult RunPreflight(comm::Communicator& world, int64_t gemm_extra_ms = 0);

}  // namespace moerun::trainer
