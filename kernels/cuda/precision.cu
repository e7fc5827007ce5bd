#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/precision.cuh"

namespace moerun::kernels::cuda {
namespace {

constexpr int kTile = 128;
constexpr int kThreads = 128;
constexpr float kE4M3Max = 448.0f;

__device__ float RoundE4M3(float x) {
  // Saturating conversion (NaN stays NaN), round to nearest even: the CPU twin's rule.
  __nv_fp8_storage_t q = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
  __half_raw h = __nv_cvt_fp8_to_halfraw(q, __NV_E4M3);
  return __half2float(__half(h));
}

__device__ float BlockMaxAbs(float v) {
  __shared__ float warp_max[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
  return m;
}

__global__ void RoundToBf16Kernel(const float* in, float* out, int64_t n) {
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(__float2bfloat16_rn(in[i]));
}

// grid (rows, tiles per row) — rows on x, which has no 65535 limit; thread t owns column
// tile*128 + t.
__global__ void Tiles1x128Kernel(const float* in, float* out, float* scales, int64_t rows,
                                 int64_t cols) {
  const int64_t r = blockIdx.x, c = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.x;
  const bool live = c < cols;
  const float x = live ? in[r * cols + c] : 0.0f;
  const float amax = BlockMaxAbs(fabsf(x));
  const float s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
  if (threadIdx.x == 0) scales[r * gridDim.y + blockIdx.y] = s;
  if (live) out[r * cols + c] = RoundE4M3(x / s) * s;
}

// grid (column blocks, row blocks); thread t walks column t of the block, row by row.
__global__ void Blocks128Kernel(const float* in, float* out, float* scales, int64_t rows,
                                int64_t cols) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const int64_t r1 = min(rows, r0 + kTile);
  float m = 0.0f;
  if (c < cols)
    for (int64_t r = r0; r < r1; ++r) m = fmaxf(m, fabsf(in[r * cols + c]));
  const float amax = BlockMaxAbs(m);
  const float s = amax > 0.0f ? amax / kE4M3Max : 1.0f;
  if (threadIdx.x == 0) scales[blockIdx.y * gridDim.x + blockIdx.x] = s;
  if (c < cols)
    for (int64_t r = r0; r < r1; ++r) out[r * cols + c] = RoundE4M3(in[r * cols + c] / s) * s;
}

}  // namespace

cudaError_t LaunchRoundToBf16(const float* in, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  RoundToBf16Kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0, stream>>>(
      in, out, n);
  return cudaGetLastError();
}

cudaError_t LaunchFakeQuantE4M3Tiles1x128(const float* in, float* out, float* scales, int64_t rows,
                                          int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((cols + kTile - 1) / kTile));
  Tiles1x128Kernel<<<grid, kThreads, 0, stream>>>(in, out, scales, rows, cols);
  return cudaGetLastError();
}

cudaError_t LaunchFakeQuantE4M3Blocks128x128(const float* in, float* out, float* scales,
                                             int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
            static_cast<unsigned>((rows + kTile - 1) / kTile));
  Blocks128Kernel<<<grid, kThreads, 0, stream>>>(in, out, scales, rows, cols);
  return cudaGetLastError();
}

}  // namespace moerun::kernels::cuda
