#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_math.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::BlockSum;
using detail::CausalSoftmaxRow;
using detail::FromFloat;
using detail::ToFloat;

constexpr int kThreads = 128;

// grid (T, H, B): block = query row i of head h in sequence b.
template <typename T>
__global__ void ForwardKernel(const T* q, const T* k, const T* v, T* out, float* probs, int64_t t,
                              int64_t h, int64_t dk, int64_t dv, float scale) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const int64_t qs = h * dk, vs = h * dv;
  const T* qi = q + (bi * t + i) * qs + hi * dk;
  const T* kb = k + bi * t * qs + hi * dk;
  const T* vb = v + bi * t * vs + hi * dv;
  float* p = probs + ((bi * h + hi) * t + i) * t;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    float s = 0.0f;
    for (int64_t d = 0; d < dk; ++d) s += ToFloat(qi[d]) * ToFloat(kb[j * qs + d]);
    s *= scale;
    p[j] = s;
    mx = fmaxf(mx, s);
  }
  CausalSoftmaxRow(p, i, t, mx, scratch);
  T* o = out + (bi * t + i) * vs + hi * dv;
  for (int64_t d = threadIdx.x; d < dv; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= i; ++j) acc += p[j] * ToFloat(vb[j * vs + d]);
    o[d] = FromFloat<T>(acc);
  }
}

// grid (T, H, B), block = query row i: dS_i = P_i ⊙ (dP_i − P_i·dP_i), dQ_i = scale dS_i K.
template <typename T>
__global__ void BackwardQueryKernel(const T* dout, const T* k, const T* v, const float* probs,
                                    float* dscores, T* dq, int64_t t, int64_t h, int64_t dk,
                                    int64_t dv, float scale) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const int64_t qs = h * dk, vs = h * dv;
  const T* doi = dout + (bi * t + i) * vs + hi * dv;
  const T* vb = v + bi * t * vs + hi * dv;
  const T* kb = k + bi * t * qs + hi * dk;
  const float* p = probs + ((bi * h + hi) * t + i) * t;
  float* ds = dscores + ((bi * h + hi) * t + i) * t;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    float dp = 0.0f;
    for (int64_t d = 0; d < dv; ++d) dp += ToFloat(doi[d]) * ToFloat(vb[j * vs + d]);
    ds[j] = dp;
    dot += p[j] * dp;
  }
  dot = BlockSum(dot, scratch);
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x)
    ds[j] = j <= i ? p[j] * (ds[j] - dot) : 0.0f;
  __syncthreads();
  T* dqi = dq + (bi * t + i) * qs + hi * dk;
  for (int64_t d = threadIdx.x; d < dk; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= i; ++j) acc += ds[j] * ToFloat(kb[j * qs + d]);
    dqi[d] = FromFloat<T>(acc * scale);
  }
}

// grid (T, H, B), block = key row j: dK_j = scale Σ_{i≥j} dS_ij Q_i, dV_j = Σ_{i≥j} P_ij dO_i.
template <typename T>
__global__ void BackwardKeyKernel(const T* dout, const T* q, const float* probs,
                                  const float* dscores, T* dk_out, T* dv_out, int64_t t, int64_t h,
                                  int64_t dk, int64_t dv, float scale) {
  const int64_t j = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const int64_t qs = h * dk, vs = h * dv;
  const float* p = probs + (bi * h + hi) * t * t;
  const float* ds = dscores + (bi * h + hi) * t * t;
  const T* qb = q + bi * t * qs + hi * dk;
  const T* dob = dout + bi * t * vs + hi * dv;
  for (int64_t d = threadIdx.x; d < dk; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t i = j; i < t; ++i) acc += ds[i * t + j] * ToFloat(qb[i * qs + d]);
    dk_out[(bi * t + j) * qs + hi * dk + d] = FromFloat<T>(acc * scale);
  }
  for (int64_t d = threadIdx.x; d < dv; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t i = j; i < t; ++i) acc += p[i * t + j] * ToFloat(dob[i * vs + d]);
    dv_out[(bi * t + j) * vs + hi * dv + d] = FromFloat<T>(acc);
  }
}

bool Fits(int64_t b, int64_t t, int64_t h) {
  return t <= 2147483647 && h <= 65535 && b <= 65535;  // grid limits (y and z are 16-bit)
}

}  // namespace

template <typename T>
cudaError_t LaunchAttentionForward(const T* q, const T* k, const T* v, T* out, float* probs,
                                   int64_t b, int64_t t, int64_t h, int64_t dk, int64_t dv,
                                   double scale, cudaStream_t stream) {
  if (b * t * h == 0) return cudaSuccess;
  if (!Fits(b, t, h)) return cudaErrorInvalidValue;
  dim3 grid(static_cast<unsigned>(t), static_cast<unsigned>(h), static_cast<unsigned>(b));
  ForwardKernel<T>
      <<<grid, kThreads, 0, stream>>>(q, k, v, out, probs, t, h, dk, dv, static_cast<float>(scale));
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchAttentionBackward(const T* dout, const T* q, const T* k, const T* v,
                                    const float* probs, float* dscores, T* dq, T* dk_out, T* dv_out,
                                    int64_t b, int64_t t, int64_t h, int64_t dk, int64_t dv,
                                    double scale, cudaStream_t stream) {
  if (b * t * h == 0) return cudaSuccess;
  if (!Fits(b, t, h)) return cudaErrorInvalidValue;
  dim3 grid(static_cast<unsigned>(t), static_cast<unsigned>(h), static_cast<unsigned>(b));
  BackwardQueryKernel<T><<<grid, kThreads, 0, stream>>>(dout, k, v, probs, dscores, dq, t, h, dk,
                                                        dv, static_cast<float>(scale));
  BackwardKeyKernel<T><<<grid, kThreads, 0, stream>>>(dout, q, probs, dscores, dk_out, dv_out, t, h,
                                                      dk, dv, static_cast<float>(scale));
  return cudaGetLastError();
}

#define MOERUN_INSTANTIATE(T)                                                                     \
  template cudaError_t LaunchAttentionForward<T>(const T*, const T*, const T*, T*, float*,        \
                                                 int64_t, int64_t, int64_t, int64_t, int64_t,     \
                                                 double, cudaStream_t);                           \
  template cudaError_t LaunchAttentionBackward<T>(                                                \
      const T*, const T*, const T*, const T*, const float*, float*, T*, T*, T*, int64_t, int64_t, \
      int64_t, int64_t, int64_t, double, cudaStream_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
