#include "kernels/cpu/op_profile.h"

#include <atomic>
#include <chrono>

namespace moerun::kernels::cpu {
namespace {

constexpr size_t kOps = static_cast<size_t>(Op::kCount);

std::atomic<bool> g_on{false};
std::array<std::atomic<int64_t>, kOps> g_ns{};
std::array<std::atomic<int64_t>, kOps> g_calls{};
thread_local ScopedOp* t_current = nullptr;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* OpName(Op op) {
  static constexpr const char* kNames[kOps] = {
      "gemm_fp32", "gemm_bf16", "gemm_fp64", "cast_bf16", "quant_e4m3",    "fp8_scale",
      "swiglu",    "rmsnorm",   "rope",      "attention", "cross_entropy", "embedding",
      "router",    "dispatch",  "combine",   "optimizer"};
  const auto i = static_cast<size_t>(op);
  return i < kOps ? kNames[i] : "unknown";
}

void SetOpProfiling(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool OpProfiling() { return g_on.load(std::memory_order_relaxed); }

std::array<OpTotal, kOps> OpProfileTotals() {
  std::array<OpTotal, kOps> out;
  for (size_t i = 0; i < kOps; ++i) {
    out[i].seconds = double(g_ns[i].load(std::memory_order_relaxed)) * 1e-9;
    out[i].calls = g_calls[i].load(std::memory_order_relaxed);
  }
  return out;
}

void ResetOpProfile() {
  for (size_t i = 0; i < kOps; ++i) {
    g_ns[i].store(0, std::memory_order_relaxed);
    g_calls[i].store(0, std::memory_order_relaxed);
  }
}

ScopedOp::ScopedOp(Op op) : op_(op) {
  if (!g_on.load(std::memory_order_relaxed)) return;
  parent_ = t_current;
  t_current = this;
  start_ns_ = NowNs();
}

ScopedOp::~ScopedOp() {
  if (start_ns_ < 0) return;
  const int64_t elapsed = NowNs() - start_ns_;
  const auto i = static_cast<size_t>(op_);
  g_ns[i].fetch_add(elapsed - child_ns_, std::memory_order_relaxed);
  g_calls[i].fetch_add(1, std::memory_order_relaxed);
  if (parent_ != nullptr) parent_->child_ns_ += elapsed;
  t_current = parent_;
}

}  // namespace moerun::kernels::cpu
