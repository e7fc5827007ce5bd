#include "worker/trainer/preflight.h"

#include <chrono>

#include "worker/health/node_health.h"

namespace moerun::trainer {
namespace {

constexpr int64_t kGemmN = 256;
// Best of 10, 1 ms apart: the ranks of a host run theirs at once, and on a host with fewer
// cores than ranks one unlucky run must not make it look slow.
constexpr int kGemmRepeats = 10;
constexpr int64_t kGemmGapMs = 1;
constexpr size_t kExchangeBytes = 1 << 20;
constexpr int kExchanges = 3;
constexpr uint32_t kPreflightTag = 0x50464c00;  // "PFL" + the round: no training tag is near

PreflightPair Exchange(comm::Communicator& world, int partner, int round) {
  PreflightPair p;
  p.partner = partner;
  std::vector<uint8_t> out(kExchangeBytes), in(kExchangeBytes);
  // Each side sends its rank's pattern; the receiver checks the partner's.
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(i * 31 + size_t(world.rank()) * 7);
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < kExchanges; ++k) {
    Status s = world.SendRecv(partner, kPreflightTag + uint32_t(round), out.data(), out.size(),
                              partner, kPreflightTag + uint32_t(round), in.data(), in.size());
    if (!s.ok()) {
      p.error = s.ToString();
      return p;
    }
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] != uint8_t(i * 31 + size_t(partner) * 7)) {
        p.error = "byte " + std::to_string(i) + " from rank " + std::to_string(partner) +
                  " arrived changed";
        return p;
      }
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  p.gbps = 2.0 * kExchanges * double(kExchangeBytes) / std::max(s, 1e-9) / 1e9;
  return p;
}

}  // namespace

int PreflightPartner(int rank, int world, int round) {
  if (world < 2 || rank < 0 || rank >= world) return -1;
  int p = round == 0 ? (rank ^ 1) : (rank % 2 ? rank + 1 : rank - 1);
  if (round == 1 && world % 2 == 0) p = (p + world) % world;
  return p >= 0 && p < world && p != rank ? p : -1;
}

nlohmann::json PreflightResult::ToJson() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : pairs)
    list.push_back({{"partner", p.partner}, {"gbps", p.gbps}, {"error", p.error}});
  return {{"gemm_gflops", gemm_gflops}, {"pairs", list}};
}

PreflightResult RunPreflight(comm::Communicator& world, int64_t gemm_extra_ms) {
  PreflightResult r;
  r.gemm_gflops = worker::MeasureGemm(kGemmN, kGemmRepeats, gemm_extra_ms, kGemmGapMs).gflops;
  for (int round = 0; round < 2; ++round) {
    const int partner = PreflightPartner(world.rank(), world.size(), round);
    if (partner >= 0) r.pairs.push_back(Exchange(world, partner, round));
  }
  return r;
}

}  // namespace moerun::trainer
