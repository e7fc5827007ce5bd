// DeepSeek-V3's fp8 GEMM on the CPU: E4M3 operands with fine-grained scales, multiplied as
// bf16 (E4M3 values are exact in bf16) over K-chunks of 128, each chunk's fp32 partial sums
// scaled by its tiles' scales and added in fp32 — the recipe's "promotion to fp32 every 128
// elements along K" (docs/architecture.md §4), at the speed of oneDNN's bf16 matmul.
//
// Row-major. op(A) is [m, k]: A stored [m, k], or [k, m] when trans_a. op(B) is [k, n]: B
// stored [k, n], or [n, k] when trans_b. A and B hold E4M3 values as bf16 bits (the q of
// kernels/cpu/precision.h's QuantE4M3* functions). Scales, one row per K-chunk c (chunk c is
// k-indices [128c, min(k, 128c + 128))):
//   sa [ceil(k/128), m]: row i of op(A)'s chunk c is scaled by sa[c·m + i];
//   sb [ceil(k/128), n]: column j of op(B)'s chunk c is scaled by sb[c·n + j].
// Then C[i, j] (= when !accumulate, else +=) Σ_c (sa[c·m+i] · sb[c·n+j]) · P_c[i, j], with
// P_c = op(A)_c · op(B)_c summed in fp32 by oneDNN, chunks added in order. Products of two E4M3
// values are exact in fp32, so only the fp32 sums round.
//
// Where oneDNN has no bf16 product on the CPU, the same chunks run as fp32 GEMMs of the same
// (exact) values. Deterministic for a given instruction set and thread count. Scratch is per
// thread; thread-safe.
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

void BlockScaledGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const uint16_t* a,
                     int64_t lda, const float* sa, const uint16_t* b, int64_t ldb, const float* sb,
                     bool accumulate, float* c, int64_t ldc);

}  // namespace moerun::kernels::cpu
