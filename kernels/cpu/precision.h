// Low-precision operands on the CPU (docs/architecture.md §4). The CPU backend trains bf16 and fp8
// jobs by rounding GEMM inputs exactly as the GPU recipe does, so the numerics match:
//  * bf16: round-to-nearest-even of fp32 to 8 mantissa bits.
//  * fp8 E4M3 (the "fn" variant: no infinities, max finite 448, subnormals down to 2^-9),
//    round-to-nearest-even with saturation, and DeepSeek-V3's scaling: one scale per 1x128
//    tile of activations (per row, per 128 columns) or per 128x128 block of weights,
//    scale = amax / 448 of the tile (1 for an all-zero tile).
// "FakeQuant" functions return the dequantized values (x_q * scale) in fp32 (the references the
// tests hold the GPU and the fp8 GEMM to); "Quant" functions return x_q itself as bf16 bits, the
// operand of kernels/cpu/fp8_gemm.h. All functions are pure and thread-safe; `in` and `out`
// may alias. The CUDA twins: kernels/cuda/fp8_quantize.cuh (real E4M3 storage that
// dequantizes to these values bit for bit) and kernels/cuda/elementwise.cuh's
// LaunchCastFromFloat (bf16).
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

inline constexpr float kE4M3Max = 448.0f;
inline constexpr int64_t kFp8TileCols = 128;  // 1x128 activation tiles, 128x128 weight blocks

float RoundToBf16(float x);
void RoundToBf16(const float* in, float* out, int64_t n);
// The same rounding, kept as bf16 bits (the upper half of the rounded fp32): the operands of
// native bf16 GEMMs (kernels/cpu/dnnl_matmul.h).
void ToBf16Bits(const float* in, uint16_t* out, int64_t n);

float RoundToE4M3(float x);  // saturating; NaN stays NaN

// in/out: [rows, cols] row-major. scales: [rows, ceil(cols/128)] row-major.
void FakeQuantE4M3Tiles1x128(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols);

// 128x1 tiles: one scale per column per 128 rows, for operands whose GEMM contracts over
// rows (the weight gradient dW = dyᵀ·x contracts over tokens; DeepSeek-V3 requantizes its
// activations and output gradients this way for that GEMM). in/out: [rows, cols] row-major.
// scales: [ceil(rows/128), cols] row-major.
void FakeQuantE4M3Tiles128x1(const float* in, float* out, float* scales, int64_t rows,
                             int64_t cols);

// in/out: [rows, cols] row-major. scales: [ceil(rows/128), ceil(cols/128)] row-major.
void FakeQuantE4M3Blocks128x128(const float* in, float* out, float* scales, int64_t rows,
                                int64_t cols);

// The same three quantizers for a block-scaled GEMM (kernels/cpu/fp8_gemm.h): q gets the E4M3
// values themselves, RoundToE4M3(in / scale), as bf16 bits (exact: E4M3's 3 mantissa bits fit
// bf16's 7 and its exponents lie inside bf16's range); scales as above. q · scale is the
// FakeQuant output bit for bit.
void QuantE4M3Tiles1x128(const float* in, uint16_t* q, float* scales, int64_t rows, int64_t cols);
void QuantE4M3Tiles128x1(const float* in, uint16_t* q, float* scales, int64_t rows, int64_t cols);
void QuantE4M3Blocks128x128(const float* in, uint16_t* q, float* scales, int64_t rows,
                            int64_t cols);

}  // namespace moerun::kernels::cpu
