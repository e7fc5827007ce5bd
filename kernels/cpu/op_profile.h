// Where a CPU step's time goes, by operation: a process-wide table of seconds and calls per
// op, filled by ScopedOp at the kernels' entry points while profiling is on (`moerun-bench
// moe-layer --profile`, `moerun-bench model-step --profile`). Times are exclusive: an op that
// runs inside another (the GEMMs of attention) is taken out of the outer op's figure.
// Off (the default), a ScopedOp costs one relaxed atomic load and changes no result.
// Thread-safe: totals are atomics, the nesting stack is per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace moerun::kernels::cpu {

enum class Op : int {
  kGemmF32,      // oneDNN fp32 matmul
  kGemmBf16,     // oneDNN bf16 matmul, fp32 out
  kGemmF64,      // OpenBLAS dgemm (the double-precision twins)
  kCastBf16,     // fp32 -> bf16 operands
  kQuantE4M3,    // fp8 tile/block quantizers
  kScaleChunks,  // fp8: per-K-chunk partial sums scaled into the output
  kSwiGlu,
  kRmsNorm,
  kRope,
  kAttention,  // softmax and masking around attention's GEMMs
  kCrossEntropy,
  kEmbedding,
  kRouter,    // scores, top-k, gates, balance loss, and their backward
  kDispatch,  // rows to and from experts
  kCombine,
  kOptimizer,  // AdamW, norms, clipping
  kCount
};

const char* OpName(Op op);

void SetOpProfiling(bool on);
bool OpProfiling();

struct OpTotal {
  double seconds = 0;
  int64_t calls = 0;
};
std::array<OpTotal, static_cast<std::size_t>(Op::kCount)> OpProfileTotals();
void ResetOpProfile();

// Times its scope as `op` while profiling is on.
class ScopedOp {
 public:
  explicit ScopedOp(Op op);
  ~ScopedOp();
  ScopedOp(const ScopedOp&) = delete;
  ScopedOp& operator=(const ScopedOp&) = delete;

 private:
  Op op_;
  int64_t start_ns_ = -1;  // -1: profiling was off at entry
  int64_t child_ns_ = 0;   // time of ops nested inside this one
  ScopedOp* parent_ = nullptr;
};

}  // namespace moerun::kernels::cpu
