// moerun-bench metrics [--steps S] [--layers L] [--experts E] [--ranks R]
// What per-step metrics cost the coordinator at DeepSeek-V3's shape (58 MoE layers x 256
// routed experts, 2048 ranks by default): S step reports, each as rank 0 sends it (loss,
// lr, ..., tokens per expert per layer), stored through a real
// CoordinatorStore (RocksDB in a temp dir) with retention thinning every 256 steps, then
//   put_ms_p50/p99            storing one report (JSON + RocksDB put)
//   thin_ms_p50/max           one thinning pass (key scan + batch delete)
//   stored                    reports left after S steps (retention's bound)
//   report_bytes              one report's JSON
//   query_ms                  reading back every stored report's scalars (the dashboard's
//                             first load: its curves)
//   heatmap_ms                one layer's load over the newest 500 steps (the heat map)
//   exposition_ms/bytes       the Prometheus text of the newest report and a status answer
#pragma once

#include <cstdint>

namespace moerun::bench {

struct MetricsBenchArgs {
  int64_t steps = 20000;
  int64_t layers = 58;
  int64_t experts = 256;
  int64_t ranks = 2048;
};

int RunMetricsBench(const MetricsBenchArgs& a);

}  // namespace moerun::bench
