#include "bench/metrics_bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "coordinator/http/http_api.h"
#include "coordinator/state/coordinator_store.h"
#include "coordinator/state/metric_retention.h"

namespace moerun::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

using Load = std::map<std::string, std::vector<int64_t>>;

// Tokens per expert per MoE layer, as rank 0 reports them.
Load ExpertLoad(const MetricsBenchArgs& a, std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> tokens(0, 40000);
  Load load;
  for (int64_t l = 0; l < a.layers; ++l) {
    std::vector<int64_t> c(size_t(a.experts));
    for (auto& x : c) x = tokens(rng);
    load[std::to_string(3 + l)] = c;
  }
  return load;
}

// The scalars of a report shaped like the trainer's (what the coordinator stores per step).
nlohmann::json Scalars(const MetricsBenchArgs& a, int64_t step, const Load& load,
                       std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::string> layers;
  for (const auto& [l, c] : load) layers.push_back(l);
  return {{"step", step},
          {"loss", 2 + u(rng)},
          {"balance_loss", u(rng) * 1e-4},
          {"lr", 2.2e-4},
          {"grad_norm", u(rng)},
          {"step_time_s", 10 * u(rng)},
          {"compute_s", u(rng)},
          {"data_wait_s", u(rng)},
          {"bubble_s", u(rng)},
          {"tokens_per_s", 1e6 * u(rng)},
          {"max_over_mean_load", 1 + u(rng)},
          {"expert_layers", layers},
          {"total_steps", a.steps},
          {"time_ms", step * 1000}};
}

}  // namespace

int RunMetricsBench(const MetricsBenchArgs& a) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("moerun-metrics-bench-" + std::to_string(getpid()));
  auto store = coordinator::CoordinatorStore::Open(dir.string());
  if (!store.ok()) {
    std::fprintf(stderr, "metrics bench: %s\n", store.status().message().c_str());
    return 1;
  }
  std::mt19937 rng(7);
  // Reports are generated ahead in a small pool: building them is the trainer's cost, not ours.
  std::vector<Load> loads;
  std::vector<nlohmann::json> pool;
  for (int i = 0; i < 16; ++i) {
    loads.push_back(ExpertLoad(a, rng));
    pool.push_back(Scalars(a, i + 1, loads.back(), rng));
  }
  std::vector<std::string> layers;
  for (const auto& [l, c] : loads[0]) layers.push_back(l);
  // What rank 0 sends: the scalars and the load of every layer in one JSON message.
  nlohmann::json wire = pool[0];
  wire["expert_load"] = loads[0];
  const size_t report_bytes = wire.dump().size();
  std::vector<double> put_ms, thin_ms;
  const auto t0 = Clock::now();
  for (int64_t step = 1; step <= a.steps; ++step) {
    nlohmann::json& r = pool[size_t(step) % pool.size()];
    r["step"] = step;
    const auto s = Clock::now();
    Status st = store.value()->PutMetric("job-1", step, r, loads[size_t(step) % loads.size()]);
    put_ms.push_back(Ms(s));
    if (!st.ok()) {
      std::fprintf(stderr, "metrics bench: %s\n", st.message().c_str());
      return 1;
    }
    if (step % coordinator::kMetricThinEverySteps == 0) {
      const auto t = Clock::now();
      auto thinned = store.value()->ThinMetrics("job-1", step, layers);
      thin_ms.push_back(Ms(t));
      if (!thinned.ok()) return 1;
    }
  }
  const double total_s = Ms(t0) / 1000.0;
  auto q = Clock::now();
  auto all = store.value()->Metrics("job-1", 0, 1'000'000);
  const double query_ms = Ms(q);
  if (!all.ok()) return 1;
  // The dashboard's heat map: one layer, the newest 500 steps.
  auto h = Clock::now();
  auto heat = store.value()->ExpertLoad("job-1", layers[0], a.steps - 500, 500);
  const double heatmap_ms = Ms(h);
  if (!heat.ok()) return 1;

  nlohmann::json status = {
      {"jobs", {{{"job_id", "job-1"}, {"phase", "RUNNING"}, {"step", a.steps}, {"loss", 2.5}}}},
      {"workers", nlohmann::json::array()},
      {"counters", {{"received", 1}}}};
  for (int64_t w = 0; w < a.ranks / 8; ++w) {
    status["workers"].push_back({{"worker", "w" + std::to_string(w)},
                                 {"host", "h" + std::to_string(w)},
                                 {"alive", true},
                                 {"heartbeat_age_ms", 300},
                                 {"devices", 8},
                                 {"used", 8},
                                 {"trainers", 8},
                                 {"trainer_failures", 0}});
  }
  // The exposition's input: the newest report in full, every rank's split.
  nlohmann::json live = all->back();
  live["expert_load"] = loads[0];
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t r = 0; r < a.ranks; ++r) {
    live["ranks"].push_back({{"rank", r},
                             {"step", a.steps},
                             {"compute_s", u(rng)},
                             {"data_wait_s", u(rng)},
                             {"bubble_s", u(rng)}});
  }
  const std::map<std::string, nlohmann::json> last = {{"job-1", live}};
  auto e = Clock::now();
  const std::string text = coordinator::HttpApi::PrometheusText(status, last);
  const double exposition_ms = Ms(e);

  nlohmann::json out = {{"bench", "metrics"},
                        {"steps", a.steps},
                        {"layers", a.layers},
                        {"experts", a.experts},
                        {"ranks", a.ranks},
                        {"report_bytes", report_bytes},
                        {"put_ms_p50", Percentile(put_ms, 0.5)},
                        {"put_ms_p99", Percentile(put_ms, 0.99)},
                        {"thin_ms_p50", Percentile(thin_ms, 0.5)},
                        {"thin_ms_max", Percentile(thin_ms, 1.0)},
                        {"reports_per_s", double(a.steps) / total_s},
                        {"stored", all->size()},
                        {"query_ms", query_ms},
                        {"heatmap_steps", heat->steps.size()},
                        {"heatmap_ms", heatmap_ms},
                        {"exposition_ms", exposition_ms},
                        {"exposition_bytes", text.size()}};
  std::printf("%s\n", out.dump().c_str());
  store.value().reset();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace moerun::bench
