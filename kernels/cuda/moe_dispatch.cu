#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/moe_dispatch.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::Blocks;
using detail::BlockSum;
using detail::FromFloat;
using detail::GatherRowsKernel;
using detail::ToFloat;

constexpr int kThreads = 256;

// One thread per expert walks every pair in order and counts its own.
__global__ void CountKernel(const int32_t* idx, int64_t pairs, int64_t experts, int64_t* counts) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= experts) return;
  int64_t c = 0;
  for (int64_t i = 0; i < pairs; ++i) c += idx[i] == e;
  counts[e] = c;
}

__global__ void OffsetsKernel(const int64_t* counts, int64_t experts, int64_t* offsets) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] = offsets[e] + counts[e];
}

// One thread per expert hands out its rows in pair order: stable by token, then slot.
__global__ void AssignKernel(const int32_t* idx, int64_t pairs, int64_t k, int64_t experts,
                             const int64_t* offsets, int32_t* row_token, int32_t* row_slot,
                             int64_t* slot_row) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= experts) return;
  int64_t r = offsets[e];
  for (int64_t i = 0; i < pairs; ++i) {
    if (idx[i] != e) continue;
    row_token[r] = static_cast<int32_t>(i / k);
    row_slot[r] = static_cast<int32_t>(i % k);
    slot_row[i] = r;
    ++r;
  }
}

template <typename T>
__global__ void DispatchBackwardKernel(const T* dbuf, const int64_t* slot_row, T* dx,
                                       int64_t tokens, int64_t k, int64_t d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * d) return;
  const int64_t t = i / d, j = i % d;
  float acc = ToFloat(dx[i]);
  for (int64_t s = 0; s < k; ++s) acc += ToFloat(dbuf[slot_row[t * k + s] * d + j]);
  dx[i] = FromFloat<T>(acc);
}

template <typename T>
__global__ void CombineKernel(const T* out, const float* gates, const int64_t* slot_row, T* y,
                              int64_t tokens, int64_t k, int64_t d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * d) return;
  const int64_t t = i / d, j = i % d;
  float acc = ToFloat(y[i]);
  for (int64_t s = 0; s < k; ++s)
    acc += gates[t * k + s] * ToFloat(out[slot_row[t * k + s] * d + j]);
  y[i] = FromFloat<T>(acc);
}

// One block per (token, slot): its row's gradient and its gate's.
template <typename T>
__global__ void CombineBackwardKernel(const T* dy, const T* out, const float* gates,
                                      const int64_t* slot_row, T* dout, float* dgates, int64_t k,
                                      int64_t d) {
  __shared__ float scratch[32];
  const int64_t slot = blockIdx.x, t = slot / k, r = slot_row[slot];
  const float g = gates[slot];
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float g_dy = ToFloat(dy[t * d + j]);
    dot += g_dy * ToFloat(out[r * d + j]);
    dout[r * d + j] = FromFloat<T>(g * g_dy);
  }
  dot = BlockSum(dot, scratch);
  if (threadIdx.x == 0) dgates[slot] = dot;
}

}  // namespace

cudaError_t LaunchPlanDispatch(const int32_t* idx, const DeviceDispatchPlan& p,
                               cudaStream_t stream) {
  if (p.experts <= 0) return cudaErrorInvalidValue;
  const int64_t pairs = p.tokens * p.top_k;
  CountKernel<<<Blocks(p.experts, kThreads), kThreads, 0, stream>>>(idx, pairs, p.experts,
                                                                    p.counts);
  OffsetsKernel<<<1, 1, 0, stream>>>(p.counts, p.experts, p.offsets);
  AssignKernel<<<Blocks(p.experts, kThreads), kThreads, 0, stream>>>(
      idx, pairs, p.top_k, p.experts, p.offsets, p.row_token, p.row_slot, p.slot_row);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchDispatchRows(const T* x, const DeviceDispatchPlan& p, T* buf, int64_t d,
                               cudaStream_t stream) {
  const int64_t rows = p.tokens * p.top_k;
  if (rows * d == 0) return cudaSuccess;
  GatherRowsKernel<<<Blocks(rows * d, kThreads), kThreads, 0, stream>>>(x, p.row_token, buf, rows,
                                                                        d);
  return cudaGetLastError();
}

template <typename T>
__global__ void ScatterRowsKernel(const T* in, const int32_t* index, T* out, int64_t rows,
                                  int64_t d) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  out[static_cast<int64_t>(index[i / d]) * d + i % d] = in[i];
}

template <typename T>
cudaError_t LaunchGatherRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d,
                             cudaStream_t stream) {
  if (rows * d == 0) return cudaSuccess;
  GatherRowsKernel<<<Blocks(rows * d, kThreads), kThreads, 0, stream>>>(in, index, out, rows, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchScatterRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d,
                              cudaStream_t stream) {
  if (rows * d == 0) return cudaSuccess;
  ScatterRowsKernel<<<Blocks(rows * d, kThreads), kThreads, 0, stream>>>(in, index, out, rows, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchDispatchRowsBackward(const T* dbuf, const DeviceDispatchPlan& p, T* dx, int64_t d,
                                       cudaStream_t stream) {
  if (p.tokens * d == 0) return cudaSuccess;
  DispatchBackwardKernel<<<Blocks(p.tokens * d, kThreads), kThreads, 0, stream>>>(
      dbuf, p.slot_row, dx, p.tokens, p.top_k, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCombine(const T* out, const float* gates, const DeviceDispatchPlan& p, T* y,
                          int64_t d, cudaStream_t stream) {
  if (p.tokens * d == 0) return cudaSuccess;
  CombineKernel<<<Blocks(p.tokens * d, kThreads), kThreads, 0, stream>>>(out, gates, p.slot_row, y,
                                                                         p.tokens, p.top_k, d);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCombineBackward(const T* dy, const T* out, const float* gates,
                                  const DeviceDispatchPlan& p, T* dout, float* dgates, int64_t d,
                                  cudaStream_t stream) {
  const int64_t pairs = p.tokens * p.top_k;
  if (pairs == 0) return cudaSuccess;
  CombineBackwardKernel<<<static_cast<unsigned>(pairs), kThreads, 0, stream>>>(
      dy, out, gates, p.slot_row, dout, dgates, p.top_k, d);
  return cudaGetLastError();
}

#define MOERUN_INSTANTIATE(T)                                                                   \
  template cudaError_t LaunchGatherRows<T>(const T*, const int32_t*, T*, int64_t, int64_t,      \
                                           cudaStream_t);                                       \
  template cudaError_t LaunchScatterRows<T>(const T*, const int32_t*, T*, int64_t, int64_t,     \
                                            cudaStream_t);                                      \
  template cudaError_t LaunchDispatchRows<T>(const T*, const DeviceDispatchPlan&, T*, int64_t,  \
                                             cudaStream_t);                                     \
  template cudaError_t LaunchDispatchRowsBackward<T>(const T*, const DeviceDispatchPlan&, T*,   \
                                                     int64_t, cudaStream_t);                    \
  template cudaError_t LaunchCombine<T>(const T*, const float*, const DeviceDispatchPlan&, T*,  \
                                        int64_t, cudaStream_t);                                 \
  template cudaError_t LaunchCombineBackward<T>(const T*, const T*, const float*,               \
                                                const DeviceDispatchPlan&, T*, float*, int64_t, \
                                                cudaStream_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
