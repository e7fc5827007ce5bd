// Linear layers in a chosen GEMM precision (docs/architecture.md §4), every sum in fp32:
//   kFp32: fp32 operands (oneDNN, kernels/cpu/gemm.h).
//   kBf16: operands rounded to bf16 (round to nearest even) and multiplied natively in bf16
//          by oneDNN (AVX512-BF16 or AMX where the CPU has them), as the GPU's bf16 GEMMs do.
//   kFp8:  emulated by rounding the operands, then multiplying in fp32: E4M3 with scale = amax /
//   448 per tile, tiles along each GEMM's contraction
//          dimension (DeepSeek-V3's recipe, and what Hopper's block-scaled fp8 GEMMs read):
//          y = x·Wᵀ and dx = dy·W take activations / output gradients in 1x128 tiles along
//          their features and weights in 128x128 blocks; dW = dyᵀ·x takes dy and x in 128x1
//          tiles along tokens.
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

}  // namespace moerun::model
