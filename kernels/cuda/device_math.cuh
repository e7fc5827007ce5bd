// Device helpers shared by the CUDA kernels: storage <-> fp32 conversion (activations are
// stored as float or bf16 and always computed in fp32) and deterministic block reductions.
// Included only from .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda::detail {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Sum over the block of each thread's v, in a fixed order (warp tree, then warps in index
// order): the same inputs give the same bits every run. Every thread gets the result.
// `scratch` holds blockDim.x / 32 values; blockDim.x is a multiple of 32, at most 1024.
template <typename V>
__device__ V BlockSum(V v, V* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // scratch may still be read by an earlier call
  if ((threadIdx.x & 31) == 0) scratch[warp] = v;
  __syncthreads();
  V total = 0;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

template <typename V>
__device__ V BlockMax(V v, V* scratch) {
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[warp] = v;
  __syncthreads();
  V m = scratch[0];
  for (int w = 1; w < warps; ++w) m = max(m, scratch[w]);
  return m;
}

// The rest of query row i of a causal softmax once the block's threads hold its scores in
// p[0..i] and `mx` their own maximum: p[0..i] becomes the probabilities, p[i+1..t) zero. The
// row is the block's: every thread calls it; it returns synchronized, the row readable by all.
__device__ inline void CausalSoftmaxRow(float* p, int64_t i, int64_t t, float mx, float* scratch) {
  mx = BlockMax(mx, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = BlockSum(sum, scratch);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) p[j] = j <= i ? p[j] * inv : 0.0f;
  __syncthreads();
}

// out[r] = in[index[r]] for rows of d values: the embedding lookup and the MoE dispatch.
template <typename T>
__global__ void GatherRowsKernel(const T* in, const int32_t* index, T* out, int64_t rows,
                                 int64_t d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  out[i] = in[static_cast<int64_t>(index[i / d]) * d + i % d];
}

inline unsigned Blocks(int64_t work, int threads) {
  return static_cast<unsigned>((work + threads - 1) / threads);
}

}  // namespace moerun::kernels::cuda::detail
