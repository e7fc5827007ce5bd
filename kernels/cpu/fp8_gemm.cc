#include "kernels/cpu/fp8_gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/precision.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {
namespace {

// Up to kGroup chunks' partial sums are made, then added into C in one pass (in chunk order,
// so the bits are those of one pass per chunk): C is read and written once per group.
constexpr int64_t kGroup = 4;
// Floats of partial sums per chunk in a row block: 256 KiB, big enough that each bf16 GEMM call
// keeps oneDNN's kernel busy (smaller blocks cost more in calls than they save in cache).
constexpr int64_t kBlockFloats = 64 * 1024;

// One row of C: c[j] (= when !add, else +=) Σ_g (s_g · b_g[j]) · p_g[j] for g < G, in order,
// in one pass. Every pointer is its own restrict parameter so the loop vectorizes without
// alias checks; absent chunks (g ≥ G) are never read.
MOERUN_SIMD_CLONES void ScaleRow(int groups, bool add, float* __restrict c,
                                 const float* __restrict p0, const float* __restrict p1,
                                 const float* __restrict p2, const float* __restrict p3,
                                 const float* __restrict b0, const float* __restrict b1,
                                 const float* __restrict b2, const float* __restrict b3, float s0,
                                 float s1, float s2, float s3, int64_t n) {
  if (!add) {
    for (int64_t j = 0; j < n; ++j) c[j] = (s0 * b0[j]) * p0[j];
  } else {
    for (int64_t j = 0; j < n; ++j) c[j] = c[j] + (s0 * b0[j]) * p0[j];
  }
  switch (groups) {
    case 1:
      return;
    case 2:
      for (int64_t j = 0; j < n; ++j) c[j] = c[j] + (s1 * b1[j]) * p1[j];
      return;
    case 3:
      for (int64_t j = 0; j < n; ++j) c[j] = (c[j] + (s1 * b1[j]) * p1[j]) + (s2 * b2[j]) * p2[j];
      return;
    default:
      for (int64_t j = 0; j < n; ++j)
        c[j] = ((c[j] + (s1 * b1[j]) * p1[j]) + (s2 * b2[j]) * p2[j]) + (s3 * b3[j]) * p3[j];
      return;
  }
}

// c[i, j] (= when !add, else +=) Σ_g (sa_g[i] · sb_g[j]) · p_g[i, j] over [m, n], g = 0..groups-1
// (at most kGroup) in order: p_g = p + g·m·n (dense, row stride n), sa_g = sa + g·lda_s,
// sb_g = sb + g·ldb_s. The same bits as one pass per chunk; C is read and written at most twice.
void ScaleInto(const float* p, const float* sa, int64_t lda_s, const float* sb, int64_t ldb_s,
               int64_t groups, bool add, float* c, int64_t ldc, int64_t m, int64_t n) {
  ScopedOp profile_op(Op::kScaleChunks);
  const float* b[kGroup] = {sb, sb, sb, sb};
  for (int64_t g = 0; g < groups; ++g) b[g] = sb + g * ldb_s;
  for (int64_t i = 0; i < m; ++i) {
    const float* pi[kGroup];
    float si[kGroup] = {0, 0, 0, 0};
    for (int64_t g = 0; g < kGroup; ++g) {
      pi[g] = p + (std::min(g, groups - 1) * m + i) * n;
      if (g < groups) si[g] = sa[g * lda_s + i];
    }
    ScaleRow(int(groups), add, c + i * ldc, pi[0], pi[1], pi[2], pi[3], b[0], b[1], b[2], b[3],
             si[0], si[1], si[2], si[3], n);
  }
}

// bf16 bits to the fp32 values they are (exact).
void Widen(const uint16_t* in, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t bits = uint32_t(in[i]) << 16;
    std::memcpy(out + i, &bits, sizeof bits);
  }
}

}  // namespace

void BlockScaledGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                     int64_t lda, const float* sa, const uint16_t* b, int64_t ldb, const float* sb,
                     bool accumulate, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  thread_local std::vector<float> partial, wide_a, wide_b;
  const int64_t chunks = (k + kFp8TileCols - 1) / kFp8TileCols;
  const int64_t group = std::min(kGroup, chunks);
  // Rows go in blocks whose partial sums stay in cache until they are added into C.
  const int64_t block = std::clamp<int64_t>(kBlockFloats / n / 16 * 16, 16, m);
  partial.resize(static_cast<size_t>(group * block * n));
  const bool bf16 = DnnlHasBf16();
  const void* a_base = a;
  const void* b_base = b;
  size_t elem = sizeof(uint16_t);
  if (!bf16) {  // the same exact values as fp32
    const int64_t a_count = (ta ? k : m) * lda, b_count = (tb ? n : k) * ldb;
    wide_a.resize(static_cast<size_t>(a_count));
    wide_b.resize(static_cast<size_t>(b_count));
    Widen(a, wide_a.data(), a_count);
    Widen(b, wide_b.data(), b_count);
    a_base = wide_a.data();
    b_base = wide_b.data();
    elem = sizeof(float);
  }
  const GemmOperands type = bf16 ? GemmOperands::kBf16 : GemmOperands::kF32;
  for (int64_t r0 = 0; r0 < m; r0 += block) {
    const int64_t rows = std::min(block, m - r0);
    for (int64_t g0 = 0; g0 < chunks; g0 += group) {
      const int64_t groups = std::min(group, chunks - g0);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k0 = (g0 + g) * kFp8TileCols, kc = std::min(kFp8TileCols, k - k0);
        // Chunk g0+g of op(A) is columns k0.. of A, or rows k0.. when A is stored transposed;
        // the same for op(B) the other way round. Row block r0 of op(A) is rows r0.. of A, or
        // columns r0.. when transposed.
        const int64_t a_off = ta ? k0 * lda + r0 : r0 * lda + k0;
        const auto* ac = static_cast<const char*>(a_base) + size_t(a_off) * elem;
        const auto* bc = static_cast<const char*>(b_base) + size_t(tb ? k0 : k0 * ldb) * elem;
        DnnlGemm(type, ta, tb, rows, n, kc, 1.0f, ac, lda, bc, ldb, 0.0f,
                 partial.data() + g * rows * n, n);
      }
      ScaleInto(partial.data(), sa + g0 * m + r0, m, sb + g0 * n, n, groups, accumulate || g0 > 0,
                c + r0 * ldc, ldc, rows, n);
    }
  }
}

}  // namespace moerun::kernels::cpu
