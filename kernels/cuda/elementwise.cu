#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::BlockMax;
using detail::Blocks;
using detail::BlockSum;
using detail::FromFloat;
using detail::GatherRowsKernel;
using detail::ToFloat;

constexpr int kThreads = 256;     // element-wise kernels
constexpr int kRowThreads = 256;  // one block per row
constexpr float kRmsNormEps = 1e-6f;

// Thread j owns column j of every table row: tokens are added in order, so repeated ids
// accumulate in the CPU's order and no two threads touch one address.
template <typename T>
__global__ void EmbeddingBackwardKernel(const T* dout, const int32_t* ids, float* dtable, int64_t n,
                                        int64_t d) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  for (int64_t i = 0; i < n; ++i)
    dtable[static_cast<int64_t>(ids[i]) * d + j] += ToFloat(dout[i * d + j]);
}

// One block per row.
template <typename T>
__global__ void RmsNormForwardKernel(const T* x, const T* w, T* y, float* rstd, int64_t d) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = ToFloat(xr[j]);
    ss += v * v;
  }
  ss = BlockSum(ss, scratch);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(d) + kRmsNormEps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    y[row * d + j] = FromFloat<T>(ToFloat(xr[j]) * r * ToFloat(w[j]));
}

// dx = r (dy w) - x r³ mean(dy w x), one block per row.
template <typename T>
__global__ void RmsNormBackwardDxKernel(const T* dy, const T* x, const T* w, const float* rstd,
                                        T* dx, int64_t d) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float r = rstd[row];
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    dot += ToFloat(dy[row * d + j]) * ToFloat(w[j]) * ToFloat(x[row * d + j]);
  dot = BlockSum(dot, scratch);
  const float c = dot / static_cast<float>(d) * r * r * r;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float g = ToFloat(dy[row * d + j]) * ToFloat(w[j]) * r - ToFloat(x[row * d + j]) * c;
    dx[row * d + j] = FromFloat<T>(g);
  }
}

// dw[j] += Σ_rows dy x r, rows in order (the CPU's order), one thread per column.
template <typename T>
__global__ void RmsNormBackwardDwKernel(const T* dy, const T* x, const float* rstd, float* dw,
                                        int64_t n, int64_t d) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float acc = dw[j];
  for (int64_t i = 0; i < n; ++i) acc += ToFloat(dy[i * d + j]) * ToFloat(x[i * d + j]) * rstd[i];
  dw[j] = acc;
}

// One thread per (b, t, h, i < hd/2); the angle in double, as on the CPU.
template <typename T>
__global__ void RopeKernel(T* x, int64_t b, int64_t t, int64_t h, int64_t hd, double theta,
                           bool inverse) {
  const int64_t half = hd / 2;
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= b * t * h * half) return;
  const int64_t i = id % half, bth = id / half, pos = (bth / h) % t;
  const double angle = static_cast<double>(pos) * pow(theta, -2.0 * i / static_cast<double>(hd));
  const float c = static_cast<float>(cos(angle));
  const float s = static_cast<float>(inverse ? -sin(angle) : sin(angle));
  T* v = x + bth * hd;
  const float x1 = ToFloat(v[i]), x2 = ToFloat(v[i + half]);
  v[i] = FromFloat<T>(x1 * c - x2 * s);
  v[i + half] = FromFloat<T>(x2 * c + x1 * s);
}

template <typename T>
__global__ void RopeInterleavedKernel(T* x, int64_t b, int64_t t, int64_t h, int64_t row_stride,
                                      int64_t head_stride, int64_t dim, double theta,
                                      bool inverse) {
  const int64_t half = dim / 2;
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= b * t * h * half) return;
  const int64_t i = id % half, bth = id / half, row = bth / h, hi = bth % h, pos = row % t;
  const double angle = static_cast<double>(pos) * pow(theta, -2.0 * i / static_cast<double>(dim));
  const float c = static_cast<float>(cos(angle));
  const float s = static_cast<float>(inverse ? -sin(angle) : sin(angle));
  T* v = x + row * row_stride + hi * head_stride + 2 * i;
  const float x1 = ToFloat(v[0]), x2 = ToFloat(v[1]);
  v[0] = FromFloat<T>(x1 * c - x2 * s);
  v[1] = FromFloat<T>(x2 * c + x1 * s);
}

template <typename T>
__global__ void SwiGluForwardKernel(const T* gate, const T* up, T* out, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = ToFloat(gate[i]);
  out[i] = FromFloat<T>(g / (1.0f + expf(-g)) * ToFloat(up[i]));
}

template <typename T>
__global__ void SwiGluBackwardKernel(const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                                     int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = ToFloat(gate[i]), d = ToFloat(dout[i]);
  const float sig = 1.0f / (1.0f + expf(-g));
  dup[i] = FromFloat<T>(d * g * sig);
  dgate[i] = FromFloat<T>(d * ToFloat(up[i]) * sig * (1.0f + g * (1.0f - sig)));
}

// One block per row: log-sum-exp, the row's loss, and (optionally) its gradient.
template <typename T>
__global__ void CrossEntropyRowKernel(const T* logits, const int32_t* targets, T* dlogits,
                                      float* row_loss, int64_t n, int64_t v, double dloss) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * v;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, ToFloat(x[j]));
  mx = BlockMax(mx, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) sum += expf(ToFloat(x[j]) - mx);
  sum = BlockSum(sum, scratch);
  const float lse = mx + logf(sum);
  const int64_t target = targets[row];
  if (threadIdx.x == 0) row_loss[row] = lse - ToFloat(x[target]);
  if (dlogits == nullptr) return;
  const float scale = static_cast<float>(dloss / static_cast<double>(n));
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float p = expf(ToFloat(x[j]) - lse);
    dlogits[row * v + j] = FromFloat<T>((p - (j == target ? 1.0f : 0.0f)) * scale);
  }
}

// One block: the mean of the row losses, summed in double in a fixed order.
__global__ void MeanKernel(const float* row_loss, double* loss, int64_t n) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += row_loss[i];
  s = BlockSum(s, scratch);
  if (threadIdx.x == 0) *loss = n > 0 ? s / static_cast<double>(n) : 0.0;
}

template <typename T>
__global__ void CastKernel(const float* in, T* out, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = FromFloat<T>(in[i]);
}

template <typename T>
__global__ void AddKernel(T* y, const T* x, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) y[i] = FromFloat<T>(ToFloat(y[i]) + ToFloat(x[i]));
}

}  // namespace

template <typename T>
cudaError_t LaunchAddInPlace(T* y, const T* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  AddKernel<T><<<Blocks(count, kThreads), kThreads, 0, stream>>>(y, x, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCastFromFloat(const float* in, T* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  CastKernel<T><<<Blocks(count, kThreads), kThreads, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchEmbeddingForward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d,
                                   cudaStream_t stream) {
  if (n * d == 0) return cudaSuccess;
  GatherRowsKernel<<<Blocks(n * d, kThreads), kThreads, 0, stream>>>(table, ids, out, n, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchEmbeddingBackward(const T* dout, const int32_t* ids, float* dtable, int64_t n,
                                    int64_t d, cudaStream_t stream) {
  if (n * d == 0) return cudaSuccess;
  EmbeddingBackwardKernel<<<Blocks(d, kThreads), kThreads, 0, stream>>>(dout, ids, dtable, n, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRmsNormForward(const T* x, const T* w, T* y, float* rstd, int64_t n, int64_t d,
                                 cudaStream_t stream) {
  if (n * d == 0) return cudaSuccess;
  RmsNormForwardKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(x, w, y, rstd, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRmsNormBackward(const T* dy, const T* x, const T* w, const float* rstd, T* dx,
                                  float* dw, int64_t n, int64_t d, cudaStream_t stream) {
  if (n * d == 0) return cudaSuccess;
  RmsNormBackwardDxKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(dy, x, w, rstd, dx,
                                                                                d);
  RmsNormBackwardDwKernel<<<Blocks(d, kThreads), kThreads, 0, stream>>>(dy, x, rstd, dw, n, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRope(T* x, int64_t b, int64_t t, int64_t h, int64_t hd, double theta,
                       bool inverse, cudaStream_t stream) {
  const int64_t work = b * t * h * (hd / 2);
  if (work == 0) return cudaSuccess;
  RopeKernel<<<Blocks(work, kThreads), kThreads, 0, stream>>>(x, b, t, h, hd, theta, inverse);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchRopeInterleaved(T* x, int64_t b, int64_t t, int64_t h, int64_t row_stride,
                                  int64_t head_stride, int64_t dim, double theta, bool inverse,
                                  cudaStream_t stream) {
  const int64_t work = b * t * h * (dim / 2);
  if (work == 0) return cudaSuccess;
  RopeInterleavedKernel<<<Blocks(work, kThreads), kThreads, 0, stream>>>(
      x, b, t, h, row_stride, head_stride, dim, theta, inverse);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSwiGluForward(const T* gate, const T* up, T* out, int64_t count,
                                cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  SwiGluForwardKernel<<<Blocks(count, kThreads), kThreads, 0, stream>>>(gate, up, out, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSwiGluBackward(const T* dout, const T* gate, const T* up, T* dgate, T* dup,
                                 int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  SwiGluBackwardKernel<<<Blocks(count, kThreads), kThreads, 0, stream>>>(dout, gate, up, dgate, dup,
                                                                         count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCrossEntropy(const T* logits, const int32_t* targets, T* dlogits, float* row_loss,
                               double* loss, int64_t n, int64_t v, double dloss,
                               cudaStream_t stream) {
  if (n > 0 && v > 0) {
    CrossEntropyRowKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
        logits, targets, dlogits, row_loss, n, v, dloss);
  }
  MeanKernel<<<1, kRowThreads, 0, stream>>>(row_loss, loss, n);
  return cudaGetLastError();
}

#define MOERUN_INSTANTIATE(T)                                                                    \
  template cudaError_t LaunchEmbeddingForward<T>(const T*, const int32_t*, T*, int64_t, int64_t, \
                                                 cudaStream_t);                                  \
  template cudaError_t LaunchEmbeddingBackward<T>(const T*, const int32_t*, float*, int64_t,     \
                                                  int64_t, cudaStream_t);                        \
  template cudaError_t LaunchRmsNormForward<T>(const T*, const T*, T*, float*, int64_t, int64_t, \
                                               cudaStream_t);                                    \
  template cudaError_t LaunchRmsNormBackward<T>(const T*, const T*, const T*, const float*, T*,  \
                                                float*, int64_t, int64_t, cudaStream_t);         \
  template cudaError_t LaunchRope<T>(T*, int64_t, int64_t, int64_t, int64_t, double, bool,       \
                                     cudaStream_t);                                              \
  template cudaError_t LaunchRopeInterleaved<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                                int64_t, double, bool, cudaStream_t);            \
  template cudaError_t LaunchSwiGluForward<T>(const T*, const T*, T*, int64_t, cudaStream_t);    \
  template cudaError_t LaunchSwiGluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t,    \
                                               cudaStream_t);                                    \
  template cudaError_t LaunchAddInPlace<T>(T*, const T*, int64_t, cudaStream_t);                 \
  template cudaError_t LaunchCastFromFloat<T>(const float*, T*, int64_t, cudaStream_t);          \
  template cudaError_t LaunchCrossEntropy<T>(const T*, const int32_t*, T*, float*, double*,      \
                                             int64_t, int64_t, double, cudaStream_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
