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

constexpr int64_t kBlockFloats = 32 * 1024;  // 128 KiB of fp32 partial sums per row block

// c[i, j] (= or +=) (sa[i] · sb[j]) · p[i, j] over [m, n]; p is dense (row stride n).
MOERUN_SIMD_CLONES void ScaleInto(const float* __restrict p, const float* __restrict sa,
                                  const float* __restrict sb, bool add, float* __restrict c,
                                  int64_t ldc, int64_t m, int64_t n) {
  ScopedOp profile_op(Op::kScaleChunks);
  for (int64_t i = 0; i < m; ++i) {
    const float si = sa[i];
    const float* __restrict pi = p + i * n;
    float* __restrict ci = c + i * ldc;
    if (add) {
      for (int64_t j = 0; j < n; ++j) ci[j] += (si * sb[j]) * pi[j];
    } else {
      for (int64_t j = 0; j < n; ++j) ci[j] = (si * sb[j]) * pi[j];
    }
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
  partial.resize(
      static_cast<size_t>(std::min<int64_t>(m, std::max<int64_t>(kBlockFloats / n, 16)) * n));
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
  const int64_t chunks = (k + kFp8TileCols - 1) / kFp8TileCols;
  // Rows go in blocks whose partial sums and output (2 x 128 KiB) stay in cache while every
  // chunk adds into them: one pass over C per chunk from memory cost more than the GEMMs.
  const int64_t block = std::clamp<int64_t>(kBlockFloats / n / 16 * 16, 16, m);
  for (int64_t r0 = 0; r0 < m; r0 += block) {
    const int64_t rows = std::min(block, m - r0);
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t k0 = ch * kFp8TileCols, kc = std::min(kFp8TileCols, k - k0);
      // Chunk ch of op(A) is columns k0.. of A, or rows k0.. when A is stored transposed; the
      // same for op(B) the other way round. Row block r0 of op(A) is rows r0.. of A, or
      // columns r0.. when transposed.
      const int64_t a_off = ta ? k0 * lda + r0 : r0 * lda + k0;
      const auto* ac = static_cast<const char*>(a_base) + size_t(a_off) * elem;
      const auto* bc = static_cast<const char*>(b_base) + size_t(tb ? k0 : k0 * ldb) * elem;
      DnnlGemm(type, ta, tb, rows, n, kc, 1.0f, ac, lda, bc, ldb, 0.0f, partial.data(), n);
      ScaleInto(partial.data(), sa + ch * m + r0, sb + ch * n, accumulate || ch > 0, c + r0 * ldc,
                ldc, rows, n);
    }
  }
}

}  // namespace moerun::kernels::cpu
