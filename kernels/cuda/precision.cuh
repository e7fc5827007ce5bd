// CUDA twins of kernels/cpu/precision.h: same math, bit for bit (tests/gpu compares them).
// Launchers take device pointers, plain sizes and an explicit stream; they enqueue work and
// return the launch status without synchronizing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

// out[i] = bf16-rounded in[i] (held in fp32). in/out: [n]; may alias.
cudaError_t LaunchRoundToBf16(const float* in, float* out, int64_t n, cudaStream_t stream);

// in/out: [rows, cols] row-major; scales: [rows, ceil(cols/128)]. One block per 1x128 tile.
cudaError_t LaunchFakeQuantE4M3Tiles1x128(const float* in, float* out, float* scales, int64_t rows,
                                          int64_t cols, cudaStream_t stream);

// in/out: [rows, cols] row-major; scales: [ceil(rows/128), ceil(cols/128)]. One block per block.
cudaError_t LaunchFakeQuantE4M3Blocks128x128(const float* in, float* out, float* scales,
                                             int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace moerun::kernels::cuda
