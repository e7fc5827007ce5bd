// Linear layers in a chosen GEMM precision (docs/architecture.md §4), every sum in fp32:
//   kFp32: fp32 operands (oneDNN, kernels/cpu/gemm.h).
//   kBf16: operands rounded to bf16 (round to nearest even) and multiplied natively in bf16
//          by oneDNN (AVX512-BF16 or AMX where the CPU has them), as the GPU's bf16 GEMMs do.
//   kFp8:  DeepSeek-V3's recipe: operands quantized to E4M3 with scale = amax / 448 per tile,
//          tiles along each GEMM's contraction dimension (what Hopper's block-scaled fp8 GEMMs
//          read): y = x·Wᵀ and dx = dy·W take activations / output gradients in 1x128 tiles
//          along their features and weights in 128x128 blocks; dW = dyᵀ·x takes dy and x in
//          128x1 tiles along tokens. The E4M3 values multiply as bf16 over K-chunks of 128 whose
//          fp32 partial sums are scaled and added in fp32 (kernels/cpu/fp8_gemm.h).
// Weights stay fp32 masters; only the GEMM operands are rounded. For T = double (gradient
// tests) only kFp32 is meaningful. Shapes as in kernels/cpu/gemm.h.
#pragma once

#include <cstdint>
#include <vector>

namespace moerun::model {

enum class GemmPrecision { kFp32, kBf16, kFp8 };

// y (= or += with accumulate_y) = x · Wᵀ.
template <typename T>
void LinearForwardP(const T* x, const T* w, T* y, int64_t n, int64_t in, int64_t out,
                    GemmPrecision p, bool accumulate_y = false);

// dx (= or += with accumulate_dx) and dW (+=), from dy.
template <typename T>
void LinearBackwardP(const T* dy, const T* x, const T* w, T* dx, T* dw, int64_t n, int64_t in,
                     int64_t out, bool accumulate_dx, GemmPrecision p);

// The gate and up projections of an MLP: two linear layers that read one x, which is
// converted to the precision's operands once. The same bits as two LinearForwardP calls.
template <typename T>
void LinearForwardPair(const T* x, const T* wa, const T* wb, T* ya, T* yb, int64_t n, int64_t in,
                       int64_t out, GemmPrecision p);

// Their backward: dx (= or +=) dya·A + dyb·B, dA += dyaᵀ·x, dB += dybᵀ·x. The same bits as two
// LinearBackwardP calls (the second accumulating into dx).
template <typename T>
void LinearBackwardPair(const T* dya, const T* dyb, const T* x, const T* wa, const T* wb, T* dx,
                        T* dwa, T* dwb, int64_t n, int64_t in, int64_t out, bool accumulate_dx,
                        GemmPrecision p);

}  // namespace moerun::model
