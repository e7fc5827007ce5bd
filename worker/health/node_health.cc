#include "worker/health/node_health.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include "common/curve_auth.h"
#include "kernels/cpu/gemm.h"
#include "worker/comm/zmq_communicator.h"

namespace moerun::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void CheckGemm(const HealthCheckOptions& o, HealthReport* r) {
  kernels::cpu::SetBlasThreads(std::max(1, o.threads));
  const int64_t n = std::max<int64_t>(16, o.gemm_n);
  const GemmMeasure m = MeasureGemm(n, o.repeats);
  r->gemm_gflops = m.gflops;
  r->gemm_max_rel_error = m.max_rel_error;
  if (!(m.max_rel_error < 1e-4)) {
    r->problems.push_back("gemm: wrong results (relative error " + std::to_string(m.max_rel_error) +
                          " against float64)");
  }
  if (r->gemm_gflops < o.min_gemm_gflops) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "gemm: %.1f GFLOP/s, below the floor of %.1f (fp32, n=%lld)",
                  r->gemm_gflops, o.min_gemm_gflops, (long long)n);
    r->problems.push_back(buf);
  }
}

// Rank `rank` of two: all-reduces its pattern and checks the sum; empty on success.
std::string AllReduceRank(comm::ZmqCommunicator& c, int64_t elements, double* seconds) {
  std::vector<float> x(static_cast<size_t>(elements));
  for (int64_t i = 0; i < elements; ++i) x[size_t(i)] = float((i % 97) + 1000 * c.rank());
  const auto t0 = Clock::now();
  Status s = c.AllReduceSum(x.data(), x.size());
  *seconds = Since(t0);
  if (!s.ok()) return s.ToString();
  for (int64_t i = 0; i < elements; ++i) {
    if (x[size_t(i)] != float(2 * (i % 97) + 1000)) {
      return "element " + std::to_string(i) + " is " + std::to_string(x[size_t(i)]) +
             ", expected " + std::to_string(2 * (i % 97) + 1000);
    }
  }
  return "";
}

void CheckDataPlane(const HealthCheckOptions& o, HealthReport* r) {
  auto key = GenerateCurveKeyPair();
  if (!key.ok()) {
    r->problems.push_back("data plane: " + key.status().message());
    return;
  }
  const comm::DataPlaneKey dk{key->public_key, key->secret_key};
  const std::string wild = "tcp://" + o.data_host + ":*";
  std::vector<std::shared_ptr<comm::ZmqTransport>> t;
  for (int rank = 0; rank < 2; ++rank) {
    auto made = comm::ZmqTransport::Create(rank, {wild, wild}, dk);
    if (!made.ok()) {
      r->problems.push_back("data plane: cannot bind on " + o.data_host + ": " +
                            made.status().message());
      return;
    }
    t.push_back(made.value());
  }
  const std::vector<std::string> table = {t[0]->local_endpoint(), t[1]->local_endpoint()};
  for (auto& x : t) {
    if (Status s = x->SetEndpoints(table); !s.ok()) {
      r->problems.push_back("data plane: " + s.message());
      return;
    }
  }
  std::string errors[2];
  double seconds[2] = {0, 0};
  std::thread peer([&] {
    auto c = comm::ZmqCommunicator::Create(t[1], o.timeout_ms);
    errors[1] = AllReduceRank(*c, o.allreduce_elements, &seconds[1]);
  });
  auto c = comm::ZmqCommunicator::Create(t[0], o.timeout_ms);
  errors[0] = AllReduceRank(*c, o.allreduce_elements, &seconds[0]);
  peer.join();
  for (int rank = 0; rank < 2; ++rank) {
    if (!errors[rank].empty()) {
      r->problems.push_back("data plane: all-reduce on " + o.data_host + ", rank " +
                            std::to_string(rank) + ": " + errors[rank]);
      return;
    }
  }
  const double s = std::max(seconds[0], seconds[1]);
  r->allreduce_gbps = double(o.allreduce_elements) * sizeof(float) / std::max(s, 1e-9) / 1e9;
}

void CheckGpus(const HealthCheckOptions& o, HealthReport* r) {
  if (o.expect_gpus <= 0) return;
  int64_t found = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(o.dev_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("nvidia", 0) == 0 && name.size() > 6 &&
        std::all_of(name.begin() + 6, name.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      ++found;
  }
  r->gpus_found = found;
  if (found < o.expect_gpus) {
    r->problems.push_back("gpus: " + std::to_string(found) + " of " +
                          std::to_string(o.expect_gpus) + " /dev/nvidiaN devices present");
  }
}

}  // namespace

GemmMeasure MeasureGemm(int64_t n, int repeats, int64_t extra_ms, int64_t gap_ms) {
  n = std::max<int64_t>(16, n);
  std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
  std::mt19937 rng(20);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : a) x = u(rng);
  for (auto& x : b) x = u(rng);
  double best = 1e30;
  for (int i = 0; i < std::max(1, repeats) + 1; ++i) {  // the first run warms up
    const auto t0 = Clock::now();
    kernels::cpu::Gemm<float>(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(),
                              n);
    if (extra_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(extra_ms));
    if (i > 0) best = std::min(best, Since(t0));
    if (gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
  }
  GemmMeasure m;
  m.gflops = 2.0 * double(n) * double(n) * double(n) / best / 1e9;
  // A wrong answer is worse than a slow one: sampled entries against float64.
  for (int s = 0; s < 64; ++s) {
    const int64_t i = int64_t(rng() % uint64_t(n)), j = int64_t(rng() % uint64_t(n));
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < n; ++k) {
      ref += double(a[size_t(i * n + k)]) * double(b[size_t(k * n + j)]);
      mag += std::fabs(double(a[size_t(i * n + k)]) * double(b[size_t(k * n + j)]));
    }
    m.max_rel_error = std::max(
        m.max_rel_error, std::fabs(double(c[size_t(i * n + j)]) - ref) / std::max(mag, 1e-30));
  }
  return m;
}

nlohmann::json HealthReport::ToJson() const {
  nlohmann::json j = {{"healthy", healthy},
                      {"problems", problems},
                      {"gemm_gflops", gemm_gflops},
                      {"gemm_max_rel_error", gemm_max_rel_error},
                      {"allreduce_gbps", allreduce_gbps},
                      {"seconds", seconds}};
  if (gpus_found >= 0) j["gpus_found"] = gpus_found;
  return j;
}

HealthReport CheckNodeHealth(const HealthCheckOptions& opts) {
  const auto t0 = Clock::now();
  HealthReport r;
  CheckGemm(opts, &r);
  CheckDataPlane(opts, &r);
  CheckGpus(opts, &r);
  r.healthy = r.problems.empty();
  r.seconds = Since(t0);
  return r;
}

}  // namespace moerun::worker
