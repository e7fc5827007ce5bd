// Linear layers in a chosen GEMM precision (DESIGN.md §4). The CPU emulates the GPU recipe
// by rounding each GEMM's inputs, then multiplying in fp32 with fp32 accumulation:
//   kBf16: inputs rounded to bf16 (round to nearest even).
//   kFp8:  activations and activation gradients fake-quantized to E4M3 in 1x128 tiles along
//          their feature dimension, weights in 128x128 blocks; scale = amax / 448. The weight
//          gradient multiplies the same quantized activation and output gradient.
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
