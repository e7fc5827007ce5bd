// E4M3 quantization into real fp8 storage, with scales laid out the way cuBLASLt's
// block-scaled matmul reads them on Hopper (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F and
// _BLK128x128_32F; kernels/cuda/fp8_gemm.cuh). The twins of kernels/cpu/precision.h: the
// same scale (amax / 448, 1 for an all-zero tile) and the same rounding, so that
// fp8 value · scale here equals the CPU's FakeQuant output bit for bit (tests/gpu checks).
//
// Data is row-major [rows, cols]; "along X" names the dimension a tile spans, which is the
// GEMM's contraction dimension. Scale layouts, in floats:
//  * Tiles1x128 (activations, output gradients; VEC128): one scale per row per 128 columns,
//    band-major: scales[(c / 128) · rows + r]. Count: ceil(cols/128) · rows.
//  * Tiles128x1, transposed (the weight gradient's operands; VEC128 of the transpose):
//    out is [cols, rows] so that the token dimension is contiguous; one scale per column
//    per 128 rows: scales[(r / 128) · cols + c] (the CPU's Tiles128x1 layout). Count:
//    ceil(rows/128) · cols.
//  * Blocks128x128 (weights; BLK128x128): block-row-major with the block-column count padded
//    to a multiple of 4: scales[(r / 128) · Blocks128Stride(cols) + c / 128].
//    The transposed copy (for dx = dy · W, which contracts over W's rows) has the same block
//    scales on the transposed grid: scales_t[(c / 128) · Blocks128Stride(rows) + r / 128].
// Launchers take device pointers, plain sizes and an explicit stream; they enqueue and
// return the launch status. T is float or __nv_bfloat16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

// constexpr so that kernels (relaxed constexpr) share them with the host.
constexpr int64_t Fp8Bands(int64_t n) { return (n + 127) / 128; }
constexpr int64_t Blocks128Stride(int64_t cols) { return (Fp8Bands(cols) + 3) / 4 * 4; }
constexpr int64_t Tiles1x128ScaleCount(int64_t rows, int64_t cols) { return Fp8Bands(cols) * rows; }
constexpr int64_t Tiles128x1ScaleCount(int64_t rows, int64_t cols) { return Fp8Bands(rows) * cols; }
constexpr int64_t Blocks128ScaleCount(int64_t rows, int64_t cols) {
  return Fp8Bands(rows) * Blocks128Stride(cols);
}

// padded_rows (>= rows; 0: rows) quantizes `in` as if it had that many rows, the extra ones
// zero (fp8 0, scale 1): cuBLASLt's fp8 GEMMs want row counts in multiples of 16, and a zero
// row adds nothing to a product. The layouts above then use padded_rows for rows.
template <typename T>
cudaError_t LaunchQuantizeE4M3Tiles1x128(const T* in, int64_t rows, int64_t cols,
                                         __nv_fp8_e4m3* out, float* scales, cudaStream_t stream,
                                         int64_t padded_rows = 0);

// out: [cols, padded_rows]; scales: ceil(padded_rows/128) · cols.
template <typename T>
cudaError_t LaunchQuantizeE4M3Tiles128x1Transposed(const T* in, int64_t rows, int64_t cols,
                                                   __nv_fp8_e4m3* out, float* scales,
                                                   cudaStream_t stream, int64_t padded_rows = 0);

// out: [rows, cols] and scales; out_t: [cols, rows] and scales_t, both optional (null).
template <typename T>
cudaError_t LaunchQuantizeE4M3Blocks128x128(const T* in, int64_t rows, int64_t cols,
                                            __nv_fp8_e4m3* out, float* scales, __nv_fp8_e4m3* out_t,
                                            float* scales_t, cudaStream_t stream);

}  // namespace moerun::kernels::cuda
