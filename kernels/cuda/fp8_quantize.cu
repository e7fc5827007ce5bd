#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/fp8_quantize.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::BlockMax;
using detail::ToFloat;

constexpr int kTile = 128;
constexpr float kE4M3Max = 448.0f;

__device__ __forceinline__ float ScaleFor(float amax) {
  return amax > 0.0f ? amax / kE4M3Max : 1.0f;
}

// Round to nearest even with saturation to ±448 (NaN stays NaN): the CPU twin's rule.
__device__ __forceinline__ __nv_fp8_e4m3 ToE4M3(float x) {
  __nv_fp8_e4m3 q;
  q.__x = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
  return q;
}

// grid (rows, bands) — rows on x, which has no 65535 limit; 128 threads; thread t owns
// column band·128 + t.
// Rows from `rows` to gridDim.x (the padded count) are zero.
template <typename T>
__global__ void Tiles1x128Kernel(const T* in, int64_t rows, int64_t cols, __nv_fp8_e4m3* out,
                                 float* scales) {
  __shared__ float scratch[kTile / 32];
  const int64_t r = blockIdx.x, c = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.x;
  const bool live = c < cols;
  const float x = live && r < rows ? ToFloat(in[r * cols + c]) : 0.0f;
  const float s = ScaleFor(BlockMax(fabsf(x), scratch));
  if (threadIdx.x == 0) scales[static_cast<int64_t>(blockIdx.y) * gridDim.x + r] = s;
  if (live) out[r * cols + c] = ToE4M3(x / s);
}

// grid (ceil(cols/32), bands of padded rows), block (32, 8): a 128-row × 32-column tile
// through shared memory, read along rows and written transposed along the token dimension.
// Rows from `rows` to `padded` are zero.
template <typename T>
__global__ void Tiles128x1TransposedKernel(const T* in, int64_t rows, int64_t padded, int64_t cols,
                                           __nv_fp8_e4m3* out, float* scales) {
  __shared__ float tile[kTile][33];
  __shared__ float scale[32];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int rr = ty; rr < kTile; rr += 8) {
    const int64_t r = r0 + rr, c = c0 + tx;
    tile[rr][tx] = (r < rows && c < cols) ? ToFloat(in[r * cols + c]) : 0.0f;
  }
  __syncthreads();
  if (ty == 0) {
    float amax = 0.0f;
    for (int rr = 0; rr < kTile; ++rr) amax = fmaxf(amax, fabsf(tile[rr][tx]));
    scale[tx] = ScaleFor(amax);
    if (c0 + tx < cols) scales[static_cast<int64_t>(blockIdx.y) * cols + c0 + tx] = scale[tx];
  }
  __syncthreads();
  for (int cc = ty; cc < 32; cc += 8) {
    const int64_t c = c0 + cc;
    if (c >= cols) continue;
    for (int rr = tx; rr < kTile; rr += 32) {
      const int64_t r = r0 + rr;
      if (r < padded) out[c * padded + r] = ToE4M3(tile[rr][cc] / scale[cc]);
    }
  }
}

// grid (column blocks, row blocks), 128 threads; thread t walks column t of the block. The
// quantized block is staged in shared memory for the coalesced transposed write.
template <typename T>
__global__ void Blocks128Kernel(const T* in, int64_t rows, int64_t cols, __nv_fp8_e4m3* out,
                                float* scales, __nv_fp8_e4m3* out_t, float* scales_t) {
  __shared__ float scratch[kTile / 32];
  __shared__ __nv_fp8_storage_t block[kTile][kTile + 4];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c = c0 + threadIdx.x;
  const int64_t r1 = min(rows, r0 + kTile), c1 = min(cols, c0 + kTile);
  float m = 0.0f;
  if (c < cols)
    for (int64_t r = r0; r < r1; ++r) m = fmaxf(m, fabsf(ToFloat(in[r * cols + c])));
  const float s = ScaleFor(BlockMax(m, scratch));
  if (threadIdx.x == 0) {
    const int64_t stride = Blocks128Stride(cols), stride_t = Blocks128Stride(rows);
    scales[blockIdx.y * stride + blockIdx.x] = s;
    if (scales_t != nullptr) scales_t[blockIdx.x * stride_t + blockIdx.y] = s;
    // The padding of each scale row (to a multiple of 4) holds 1, never garbage.
    if (blockIdx.x + 1 == gridDim.x)
      for (int64_t j = gridDim.x; j < stride; ++j) scales[blockIdx.y * stride + j] = 1.0f;
    if (scales_t != nullptr && blockIdx.y + 1 == gridDim.y)
      for (int64_t j = gridDim.y; j < stride_t; ++j) scales_t[blockIdx.x * stride_t + j] = 1.0f;
  }
  if (c < cols) {
    for (int64_t r = r0; r < r1; ++r) {
      const __nv_fp8_e4m3 q = ToE4M3(ToFloat(in[r * cols + c]) / s);
      out[r * cols + c] = q;
      block[r - r0][threadIdx.x] = q.__x;
    }
  }
  if (out_t == nullptr) return;
  __syncthreads();
  // Thread t now owns row r0 + t: out_t[cc][r0 + t] for every column cc of the block.
  const int64_t r = r0 + threadIdx.x;
  if (r >= r1) return;
  for (int64_t cc = c0; cc < c1; ++cc) out_t[cc * rows + r].__x = block[threadIdx.x][cc - c0];
}

}  // namespace

template <typename T>
cudaError_t LaunchQuantizeE4M3Tiles1x128(const T* in, int64_t rows, int64_t cols,
                                         __nv_fp8_e4m3* out, float* scales, cudaStream_t stream,
                                         int64_t padded_rows) {
  const int64_t padded = padded_rows > rows ? padded_rows : rows;
  if (padded == 0 || cols == 0) return cudaSuccess;
  dim3 grid(static_cast<unsigned>(padded), static_cast<unsigned>(Fp8Bands(cols)));
  Tiles1x128Kernel<<<grid, kTile, 0, stream>>>(in, rows, cols, out, scales);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchQuantizeE4M3Tiles128x1Transposed(const T* in, int64_t rows, int64_t cols,
                                                   __nv_fp8_e4m3* out, float* scales,
                                                   cudaStream_t stream, int64_t padded_rows) {
  const int64_t padded = padded_rows > rows ? padded_rows : rows;
  if (padded == 0 || cols == 0) return cudaSuccess;
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(Fp8Bands(padded)));
  Tiles128x1TransposedKernel<<<grid, dim3(32, 8), 0, stream>>>(in, rows, padded, cols, out, scales);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchQuantizeE4M3Blocks128x128(const T* in, int64_t rows, int64_t cols,
                                            __nv_fp8_e4m3* out, float* scales, __nv_fp8_e4m3* out_t,
                                            float* scales_t, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  dim3 grid(static_cast<unsigned>(Fp8Bands(cols)), static_cast<unsigned>(Fp8Bands(rows)));
  Blocks128Kernel<<<grid, kTile, 0, stream>>>(in, rows, cols, out, scales, out_t, scales_t);
  return cudaGetLastError();
}

#define MOERUN_INSTANTIATE(T)                                                                      \
  template cudaError_t LaunchQuantizeE4M3Tiles1x128<T>(const T*, int64_t, int64_t, __nv_fp8_e4m3*, \
                                                       float*, cudaStream_t, int64_t);             \
  template cudaError_t LaunchQuantizeE4M3Tiles128x1Transposed<T>(                                  \
      const T*, int64_t, int64_t, __nv_fp8_e4m3*, float*, cudaStream_t, int64_t);                  \
  template cudaError_t LaunchQuantizeE4M3Blocks128x128<T>(                                         \
      const T*, int64_t, int64_t, __nv_fp8_e4m3*, float*, __nv_fp8_e4m3*, float*, cudaStream_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
