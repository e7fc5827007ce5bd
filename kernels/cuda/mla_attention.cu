#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/mla_attention.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::BlockSum;
using detail::CausalSoftmaxRow;
using detail::FromFloat;
using detail::ToFloat;

constexpr int kThreads = 128;

// Where rows live: token r = bi·t + i.
struct MlaStrides {
  int64_t q, kv, out;  // row strides of q, kv and out
  int64_t dq, dkv;     // per-head widths of q and kv
  __host__ __device__ explicit MlaStrides(const MlaDimsCuda& m)
      : q(m.heads * (m.nope + m.rope)),
        kv(m.heads * (m.nope + m.v)),
        out(m.heads * m.v),
        dq(m.nope + m.rope),
        dkv(m.nope + m.v) {}
};

// score of query row qi against key row j (its k_nope at kn, the shared k_pe at kp), unscaled.
template <typename T>
__device__ float Score(const T* qi, const T* kn, const T* kp, const MlaDimsCuda& m) {
  float s = 0.0f;
  for (int64_t d = 0; d < m.nope; ++d) s += ToFloat(qi[d]) * ToFloat(kn[d]);
  for (int64_t d = 0; d < m.rope; ++d) s += ToFloat(qi[m.nope + d]) * ToFloat(kp[d]);
  return s;
}

// grid (T, H, B): block = query row i of head h in sequence b.
template <typename T>
__global__ void ForwardKernel(const T* q, const T* kv, const T* kpe, T* out, float* probs,
                              int64_t t, MlaDimsCuda m, float scale) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const MlaStrides st(m);
  const T* qi = q + (bi * t + i) * st.q + hi * st.dq;
  const T* kvb = kv + bi * t * st.kv + hi * st.dkv;
  const T* kpb = kpe + bi * t * m.rope;
  float* p = probs + ((bi * m.heads + hi) * t + i) * t;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float s = Score(qi, kvb + j * st.kv, kpb + j * m.rope, m) * scale;
    p[j] = s;
    mx = fmaxf(mx, s);
  }
  CausalSoftmaxRow(p, i, t, mx, scratch);
  T* o = out + (bi * t + i) * st.out + hi * m.v;
  for (int64_t d = threadIdx.x; d < m.v; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= i; ++j) acc += p[j] * ToFloat(kvb[j * st.kv + m.nope + d]);
    o[d] = FromFloat<T>(acc);
  }
}

// grid (T, H, B), block = query row i: dS_i = P_i ⊙ (dP_i − P_i·dP_i), dQ_i = scale dS_i K.
template <typename T>
__global__ void BackwardQueryKernel(const T* dout, const T* kv, const T* kpe, const float* probs,
                                    float* dscores, T* dq, int64_t t, MlaDimsCuda m, float scale) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const MlaStrides st(m);
  const T* doi = dout + (bi * t + i) * st.out + hi * m.v;
  const T* kvb = kv + bi * t * st.kv + hi * st.dkv;
  const T* kpb = kpe + bi * t * m.rope;
  const float* p = probs + ((bi * m.heads + hi) * t + i) * t;
  float* ds = dscores + ((bi * m.heads + hi) * t + i) * t;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    float dp = 0.0f;
    for (int64_t d = 0; d < m.v; ++d) dp += ToFloat(doi[d]) * ToFloat(kvb[j * st.kv + m.nope + d]);
    ds[j] = dp;
    dot += p[j] * dp;
  }
  dot = BlockSum(dot, scratch);
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x)
    ds[j] = j <= i ? p[j] * (ds[j] - dot) : 0.0f;
  __syncthreads();
  T* dqi = dq + (bi * t + i) * st.q + hi * st.dq;
  for (int64_t d = threadIdx.x; d < st.dq; d += blockDim.x) {
    float acc = 0.0f;
    if (d < m.nope) {
      for (int64_t j = 0; j <= i; ++j) acc += ds[j] * ToFloat(kvb[j * st.kv + d]);
    } else {
      for (int64_t j = 0; j <= i; ++j) acc += ds[j] * ToFloat(kpb[j * m.rope + d - m.nope]);
    }
    dqi[d] = FromFloat<T>(acc * scale);
  }
}

// grid (T, H, B), block = key row j of head h: dK_nope_j = scale Σ_{i≥j} dS_ij Q_nope_i,
// dV_j = Σ_{i≥j} P_ij dO_i.
template <typename T>
__global__ void BackwardKeyKernel(const T* dout, const T* q, const float* probs,
                                  const float* dscores, T* dkv, int64_t t, MlaDimsCuda m,
                                  float scale) {
  const int64_t j = blockIdx.x, hi = blockIdx.y, bi = blockIdx.z;
  const MlaStrides st(m);
  const float* p = probs + (bi * m.heads + hi) * t * t;
  const float* ds = dscores + (bi * m.heads + hi) * t * t;
  const T* qb = q + bi * t * st.q + hi * st.dq;
  const T* dob = dout + bi * t * st.out + hi * m.v;
  T* dkj = dkv + (bi * t + j) * st.kv + hi * st.dkv;
  for (int64_t d = threadIdx.x; d < st.dkv; d += blockDim.x) {
    float acc = 0.0f;
    if (d < m.nope) {
      for (int64_t i = j; i < t; ++i) acc += ds[i * t + j] * ToFloat(qb[i * st.q + d]);
      acc *= scale;
    } else {
      for (int64_t i = j; i < t; ++i) acc += p[i * t + j] * ToFloat(dob[i * st.out + d - m.nope]);
    }
    dkj[d] = FromFloat<T>(acc);
  }
}

// grid (T, B), block = key row j: dK_pe_j = scale Σ_h Σ_{i≥j} dS_hij Q_pe_hi, heads in order.
template <typename T>
__global__ void BackwardSharedKeyKernel(const T* q, const float* dscores, T* dkpe, int64_t t,
                                        MlaDimsCuda m, float scale) {
  const int64_t j = blockIdx.x, bi = blockIdx.y;
  const MlaStrides st(m);
  for (int64_t d = threadIdx.x; d < m.rope; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t hi = 0; hi < m.heads; ++hi) {
      const float* ds = dscores + (bi * m.heads + hi) * t * t;
      const T* qb = q + bi * t * st.q + hi * st.dq + m.nope;
      for (int64_t i = j; i < t; ++i) acc += ds[i * t + j] * ToFloat(qb[i * st.q + d]);
    }
    dkpe[(bi * t + j) * m.rope + d] = FromFloat<T>(acc * scale);
  }
}

bool Fits(int64_t b, int64_t t, int64_t h) {
  return t <= 2147483647 && h <= 65535 && b <= 65535;  // grid limits (y and z are 16-bit)
}

}  // namespace

template <typename T>
cudaError_t LaunchMlaAttentionForward(const T* q, const T* kv, const T* kpe, T* out, float* probs,
                                      int64_t b, int64_t t, MlaDimsCuda dims, double scale,
                                      cudaStream_t stream) {
  if (b * t * dims.heads == 0) return cudaSuccess;
  if (!Fits(b, t, dims.heads)) return cudaErrorInvalidValue;
  dim3 grid(unsigned(t), unsigned(dims.heads), unsigned(b));
  ForwardKernel<T><<<grid, kThreads, 0, stream>>>(q, kv, kpe, out, probs, t, dims, float(scale));
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchMlaAttentionBackward(const T* dout, const T* q, const T* kv, const T* kpe,
                                       const float* probs, float* dscores, T* dq, T* dkv, T* dkpe,
                                       int64_t b, int64_t t, MlaDimsCuda dims, double scale,
                                       cudaStream_t stream) {
  if (b * t * dims.heads == 0) return cudaSuccess;
  if (!Fits(b, t, dims.heads)) return cudaErrorInvalidValue;
  const float s = float(scale);
  dim3 grid(unsigned(t), unsigned(dims.heads), unsigned(b));
  BackwardQueryKernel<T>
      <<<grid, kThreads, 0, stream>>>(dout, kv, kpe, probs, dscores, dq, t, dims, s);
  BackwardKeyKernel<T><<<grid, kThreads, 0, stream>>>(dout, q, probs, dscores, dkv, t, dims, s);
  BackwardSharedKeyKernel<T>
      <<<dim3(unsigned(t), unsigned(b)), 32, 0, stream>>>(q, dscores, dkpe, t, dims, s);
  return cudaGetLastError();
}

#define MOERUN_INSTANTIATE(T)                                                                   \
  template cudaError_t LaunchMlaAttentionForward<T>(const T*, const T*, const T*, T*, float*,   \
                                                    int64_t, int64_t, MlaDimsCuda, double,      \
                                                    cudaStream_t);                              \
  template cudaError_t LaunchMlaAttentionBackward<T>(const T*, const T*, const T*, const T*,    \
                                                     const float*, float*, T*, T*, T*, int64_t, \
                                                     int64_t, MlaDimsCuda, double, cudaStream_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(__nv_bfloat16)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cuda
