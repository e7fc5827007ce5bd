#include <cmath>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/optimizer.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::Blocks;
using detail::BlockSum;

constexpr int kThreads = 256;

__global__ void AdamWKernel(float* p, const float* g, float* m, float* v, int64_t n, float b1,
                            float b2, float c1, float c2, float lr, float eps, float wd) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i];
  const float mi = b1 * m[i] + (1.0f - b1) * gi;
  const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  const float mhat = mi * c1, vhat = vi * c2;
  p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
}

// Block b sums elements b·kThreads + t, stepping by the whole grid.
__global__ void PartialSquaresKernel(const float* g, int64_t n, double* partial) {
  __shared__ double scratch[32];
  double s = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double x = g[i];
    s += x * x;
  }
  s = BlockSum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void SumPartialsKernel(const double* partial, int blocks, double* out) {
  if (threadIdx.x != 0) return;
  double s = 0.0;
  for (int b = 0; b < blocks; ++b) s += partial[b];
  *out = s;
}

__global__ void ScaleKernel(float* g, int64_t n, float factor) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) g[i] *= factor;
}

}  // namespace

cudaError_t LaunchAdamWUpdate(float* p, const float* g, float* m, float* v, int64_t n,
                              const cpu::AdamWStep& s, bool decay, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // Bias corrections on the host in double, as the CPU twin does.
  const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(s.beta1, static_cast<double>(s.step))));
  const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(s.beta2, static_cast<double>(s.step))));
  AdamWKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(
      p, g, m, v, n, static_cast<float>(s.beta1), static_cast<float>(s.beta2), c1, c2,
      static_cast<float>(s.lr), static_cast<float>(s.eps),
      decay ? static_cast<float>(s.weight_decay) : 0.0f);
  return cudaGetLastError();
}

cudaError_t LaunchSumOfSquares(const float* g, int64_t n, double* partial, double* out,
                               cudaStream_t stream) {
  PartialSquaresKernel<<<kNormBlocks, kThreads, 0, stream>>>(g, n, partial);
  SumPartialsKernel<<<1, 32, 0, stream>>>(partial, kNormBlocks, out);
  return cudaGetLastError();
}

cudaError_t LaunchScaleInPlace(float* g, int64_t n, float factor, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ScaleKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(g, n, factor);
  return cudaGetLastError();
}

}  // namespace moerun::kernels::cuda
