// CUDA twins of kernels/cpu/optimizer.h: AdamW on fp32 master weights, the sum of squares for
// the global gradient norm, and the in-place scale that clips. The sum is deterministic: a
// fixed grid of kNormBlocks blocks sums fixed strides, then one block sums their partials in
// index order, all in double. Launchers take device pointers, plain sizes and a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/optimizer.h"

namespace moerun::kernels::cuda {

inline constexpr int kNormBlocks = 256;

// p -= lr · (m̂ / (sqrt(v̂) + eps) + wd · p), m and v updated in place: the CPU formula in fp32.
cudaError_t LaunchAdamWUpdate(float* p, const float* g, float* m, float* v, int64_t n,
                              const cpu::AdamWStep& s, bool decay, cudaStream_t stream);

// *out (device double) = Σ g². partial: device scratch of kNormBlocks doubles.
cudaError_t LaunchSumOfSquares(const float* g, int64_t n, double* partial, double* out,
                               cudaStream_t stream);

// g *= factor.
cudaError_t LaunchScaleInPlace(float* g, int64_t n, float factor, cudaStream_t stream);

}  // namespace moerun::kernels::cuda
