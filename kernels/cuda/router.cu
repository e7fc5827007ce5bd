#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/router.cuh"

namespace moerun::kernels::cuda {
namespace {

using detail::Blocks;
using detail::BlockSum;

constexpr int kThreads = 128;  // one thread per token

__global__ void SigmoidKernel(const float* logits, float* scores, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) scores[i] = 1.0f / (1.0f + expf(-logits[i]));
}

// One thread per token: the CPU's double-precision sum in the same order.
__global__ void SoftmaxKernel(const float* logits, float* scores, int64_t n, int64_t e) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* l = logits + i * e;
  float mx = l[0];
  for (int64_t j = 1; j < e; ++j) mx = fmaxf(mx, l[j]);
  double sum = 0;
  for (int64_t j = 0; j < e; ++j) sum += exp(static_cast<double>(l[j] - mx));
  for (int64_t j = 0; j < e; ++j)
    scores[i * e + j] = static_cast<float>(exp(static_cast<double>(l[j] - mx)) / sum);
}

// Inserts (v, id) into the descending list top[0..len) of capacity cap: strictly greater
// values go first, so among equal values the one seen first (the lower index) stays ahead.
__device__ void Insert(double* top, int32_t* ids, int64_t* len, int64_t cap, double v, int32_t id) {
  int64_t pos = *len < cap ? *len : cap;
  while (pos > 0 && v > top[pos - 1]) --pos;
  if (pos >= cap) return;
  const int64_t last = *len < cap ? *len : cap - 1;
  for (int64_t q = last; q > pos; --q) {
    top[q] = top[q - 1];
    ids[q] = ids[q - 1];
  }
  top[pos] = v;
  ids[pos] = id;
  if (*len < cap) ++*len;
}

// One thread per token: the CPU twin's selection, step for step.
__global__ void SelectKernel(const float* scores, const float* bias, int32_t* idx, float* gates,
                             int64_t n, int64_t e, int64_t k, int64_t g, int64_t topk_groups,
                             bool softmax, double route_scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* s = scores + i * e;
  const int64_t per_group = e / g;
  bool group_allowed[kRouterMaxGroups];
  for (int64_t q = 0; q < g; ++q) group_allowed[q] = g == 1;
  if (g > 1) {
    double gtop[kRouterMaxGroups];
    int32_t gids[kRouterMaxGroups];
    int64_t glen = 0;
    for (int64_t q = 0; q < g; ++q) {
      double top1 = -INFINITY, top2 = -INFINITY;
      for (int64_t j = q * per_group; j < (q + 1) * per_group; ++j) {
        const double v = static_cast<double>(s[j]) + (bias ? static_cast<double>(bias[j]) : 0.0);
        if (v > top1) {
          top2 = top1;
          top1 = v;
        } else if (v > top2) {
          top2 = v;
        }
      }
      Insert(gtop, gids, &glen, topk_groups, top1 + top2, static_cast<int32_t>(q));
    }
    for (int64_t q = 0; q < glen; ++q) group_allowed[gids[q]] = true;
  }
  double top[kRouterMaxTopK];
  int32_t ids[kRouterMaxTopK];
  int64_t len = 0;
  for (int64_t j = 0; j < e; ++j) {
    if (!group_allowed[j / per_group]) continue;
    const double v = static_cast<double>(s[j]) + (bias ? static_cast<double>(bias[j]) : 0.0);
    Insert(top, ids, &len, k, v, static_cast<int32_t>(j));
  }
  double sum = 0;
  for (int64_t q = 0; q < k; ++q) sum += static_cast<double>(s[ids[q]]);
  for (int64_t q = 0; q < k; ++q) {
    idx[i * k + q] = ids[q];
    const double w =
        softmax ? static_cast<double>(s[ids[q]]) : static_cast<double>(s[ids[q]]) / sum;
    gates[i * k + q] = static_cast<float>(w * route_scale);
  }
}

// One thread per token: g_q = r s_q / S, so ds_j = r/S (dg_j − Σ_q dg_q s_q / S) (sigmoid).
__global__ void GatesBackwardKernel(const float* dgates, const float* scores, const int32_t* idx,
                                    float* dscores, int64_t n, int64_t e, int64_t k, bool softmax,
                                    double r) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* s = scores + i * e;
  const int32_t* id = idx + i * k;
  const float* dg = dgates + i * k;
  float* ds = dscores + i * e;
  if (softmax) {
    for (int64_t q = 0; q < k; ++q) ds[id[q]] += static_cast<float>(r * static_cast<double>(dg[q]));
    return;
  }
  double sum = 0, dot = 0;
  for (int64_t q = 0; q < k; ++q) sum += static_cast<double>(s[id[q]]);
  for (int64_t q = 0; q < k; ++q) dot += static_cast<double>(dg[q]) * static_cast<double>(s[id[q]]);
  for (int64_t q = 0; q < k; ++q)
    ds[id[q]] += static_cast<float>(r / sum * (static_cast<double>(dg[q]) - dot / sum));
}

__global__ void SigmoidBackwardKernel(const float* dscores, const float* scores, float* dlogits,
                                      int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) dlogits[i] = dscores[i] * scores[i] * (1.0f - scores[i]);
}

__global__ void SoftmaxBackwardKernel(const float* dscores, const float* scores, float* dlogits,
                                      int64_t n, int64_t e) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* s = scores + i * e;
  const float* ds = dscores + i * e;
  double dot = 0;
  for (int64_t j = 0; j < e; ++j) dot += static_cast<double>(ds[j]) * static_cast<double>(s[j]);
  for (int64_t j = 0; j < e; ++j)
    dlogits[i * e + j] =
        static_cast<float>(static_cast<double>(s[j]) * (static_cast<double>(ds[j]) - dot));
}

// One thread per token: Σ_j s_j, in double.
__global__ void RowSumKernel(const float* scores, double* row_sum, int64_t n, int64_t e) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  double s = 0;
  for (int64_t j = 0; j < e; ++j) s += static_cast<double>(scores[i * e + j]);
  row_sum[i] = s;
}

// One block per sequence; thread j owns expert j: its count f_j and its mean normalized
// affinity, tokens in order. seq[bi] = Σ_j f_j · f_scale · P_j / t, summed over j in order.
__global__ void SequenceKernel(const float* scores, const int32_t* idx, const double* row_sum,
                               double* f, double* seq, int64_t t, int64_t e, int64_t k) {
  __shared__ double scratch[32];
  const int64_t bi = blockIdx.x;
  const double f_scale = static_cast<double>(e) / (static_cast<double>(k) * static_cast<double>(t));
  double part = 0;
  for (int64_t j = threadIdx.x; j < e; j += blockDim.x) {
    double count = 0, p = 0;
    for (int64_t ti = 0; ti < t; ++ti) {
      const int64_t row = bi * t + ti;
      for (int64_t q = 0; q < k; ++q) count += idx[row * k + q] == j ? 1.0 : 0.0;
      p += static_cast<double>(scores[row * e + j]) / row_sum[row];
    }
    f[bi * e + j] = count;
    part += count * f_scale * p / static_cast<double>(t);
  }
  // The CPU sums over j in index order; a block sum orders it differently (last bits only).
  part = BlockSum(part, scratch);
  if (threadIdx.x == 0) seq[bi] = part;
}

__global__ void LossKernel(const double* seq, int64_t b, double alpha, double* loss) {
  if (threadIdx.x != 0) return;
  double l = 0;
  for (int64_t bi = 0; bi < b; ++bi) l += alpha * seq[bi] / static_cast<double>(b);
  *loss = l;
}

// One thread per token: ds_j += dloss (dsn_j − Σ_i dsn_i s'_i) / Σ s, dsn_j = α f_j f_scale/(t b).
__global__ void BalanceBackwardKernel(const float* scores, const double* row_sum, const double* f,
                                      float* dscores, int64_t b, int64_t t, int64_t e, int64_t k,
                                      double alpha, double dloss) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= b * t) return;
  const int64_t bi = row / t;
  const double f_scale = static_cast<double>(e) / (static_cast<double>(k) * static_cast<double>(t));
  const double c = alpha * f_scale / (static_cast<double>(t) * static_cast<double>(b));
  const double sum = row_sum[row];
  const float* s = scores + row * e;
  double dot = 0;
  for (int64_t j = 0; j < e; ++j) dot += c * f[bi * e + j] * static_cast<double>(s[j]) / sum;
  for (int64_t j = 0; j < e; ++j)
    dscores[row * e + j] += static_cast<float>(dloss * (c * f[bi * e + j] - dot) / sum);
}

bool Supported(const cpu::RouterConfig& cfg) {
  return cfg.experts > 0 && cfg.top_k > 0 && cfg.top_k <= kRouterMaxTopK && cfg.n_groups >= 1 &&
         cfg.n_groups <= kRouterMaxGroups && cfg.experts % cfg.n_groups == 0 &&
         cfg.topk_groups >= 1 && cfg.topk_groups <= cfg.n_groups &&
         cfg.top_k <= cfg.topk_groups * (cfg.experts / cfg.n_groups);
}

}  // namespace

cudaError_t LaunchRouterScores(const float* logits, float* scores, int64_t n,
                               const cpu::RouterConfig& cfg, cudaStream_t stream) {
  if (!Supported(cfg)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (cfg.softmax) {
    SoftmaxKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(logits, scores, n, cfg.experts);
  } else {
    SigmoidKernel<<<Blocks(n * cfg.experts, 256), 256, 0, stream>>>(logits, scores,
                                                                    n * cfg.experts);
  }
  return cudaGetLastError();
}

cudaError_t LaunchRouterSelect(const float* scores, const float* bias, int32_t* idx, float* gates,
                               int64_t n, const cpu::RouterConfig& cfg, cudaStream_t stream) {
  if (!Supported(cfg)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  SelectKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(
      scores, bias, idx, gates, n, cfg.experts, cfg.top_k, cfg.n_groups, cfg.topk_groups,
      cfg.softmax, cfg.route_scale);
  return cudaGetLastError();
}

cudaError_t LaunchRouterGatesBackward(const float* dgates, const float* scores, const int32_t* idx,
                                      float* dscores, int64_t n, const cpu::RouterConfig& cfg,
                                      cudaStream_t stream) {
  if (!Supported(cfg)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  GatesBackwardKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(
      dgates, scores, idx, dscores, n, cfg.experts, cfg.top_k, cfg.softmax, cfg.route_scale);
  return cudaGetLastError();
}

cudaError_t LaunchRouterScoresBackward(const float* dscores, const float* scores, float* dlogits,
                                       int64_t n, const cpu::RouterConfig& cfg,
                                       cudaStream_t stream) {
  if (!Supported(cfg)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (cfg.softmax) {
    SoftmaxBackwardKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(dscores, scores, dlogits, n,
                                                                        cfg.experts);
  } else {
    SigmoidBackwardKernel<<<Blocks(n * cfg.experts, 256), 256, 0, stream>>>(
        dscores, scores, dlogits, n * cfg.experts);
  }
  return cudaGetLastError();
}

cudaError_t LaunchSeqBalanceLoss(const float* scores, const int32_t* idx, int64_t b, int64_t t,
                                 double alpha, const cpu::RouterConfig& cfg, float* dscores,
                                 double dloss, double* loss, const BalanceScratch& scratch,
                                 cudaStream_t stream) {
  if (!Supported(cfg)) return cudaErrorInvalidValue;
  const int64_t n = b * t, e = cfg.experts;
  if (n == 0) {
    return cudaMemsetAsync(loss, 0, sizeof(double), stream);
  }
  RowSumKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(scores, scratch.row_sum, n, e);
  SequenceKernel<<<static_cast<unsigned>(b), kThreads, 0, stream>>>(
      scores, idx, scratch.row_sum, scratch.f, scratch.seq, t, e, cfg.top_k);
  LossKernel<<<1, 32, 0, stream>>>(scratch.seq, b, alpha, loss);
  if (dscores != nullptr) {
    BalanceBackwardKernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(
        scores, scratch.row_sum, scratch.f, dscores, b, t, e, cfg.top_k, alpha, dloss);
  }
  return cudaGetLastError();
}

}  // namespace moerun::kernels::cuda
