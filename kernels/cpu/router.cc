#include "kernels/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/op_profile.h"

namespace moerun::kernels::cpu {

template <typename T>
void RouterScores(const T* logits, T* scores, int64_t n, const RouterConfig& cfg) {
  ScopedOp profile_op(Op::kRouter);
  const int64_t e = cfg.experts;
  for (int64_t i = 0; i < n; ++i) {
    const T* l = logits + i * e;
    T* s = scores + i * e;
    if (cfg.softmax) {
      const T mx = *std::max_element(l, l + e);
      double sum = 0;
      for (int64_t j = 0; j < e; ++j) sum += std::exp(double(l[j] - mx));
      for (int64_t j = 0; j < e; ++j) s[j] = T(std::exp(double(l[j] - mx)) / sum);
    } else {
      for (int64_t j = 0; j < e; ++j) s[j] = T(1) / (T(1) + std::exp(-l[j]));
    }
  }
}

template <typename T>
void RouterSelect(const T* scores, const float* bias, int32_t* idx, T* gates, int64_t n,
                  const RouterConfig& cfg) {
  ScopedOp profile_op(Op::kRouter);
  const int64_t e = cfg.experts, k = cfg.top_k, g = cfg.n_groups, per_group = e / g;
  std::vector<double> sel(static_cast<size_t>(e));
  std::vector<int32_t> order(static_cast<size_t>(e));
  std::vector<double> group_score(static_cast<size_t>(g));
  std::vector<int32_t> group_order(static_cast<size_t>(g));
  std::vector<char> allowed(static_cast<size_t>(e));
  // Higher value first; on equal values the lower index first.
  auto by_value = [](const std::vector<double>& v) {
    return [&v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  };
  for (int64_t i = 0; i < n; ++i) {
    const T* s = scores + i * e;
    for (int64_t j = 0; j < e; ++j) sel[j] = double(s[j]) + (bias ? double(bias[j]) : 0.0);
    std::fill(allowed.begin(), allowed.end(), char(1));
    if (g > 1) {
      for (int64_t q = 0; q < g; ++q) {
        double top1 = -INFINITY, top2 = -INFINITY;
        for (int64_t j = q * per_group; j < (q + 1) * per_group; ++j) {
          if (sel[j] > top1) {
            top2 = top1;
            top1 = sel[j];
          } else if (sel[j] > top2) {
            top2 = sel[j];
          }
        }
        group_score[q] = top1 + top2;
      }
      std::iota(group_order.begin(), group_order.end(), 0);
      std::partial_sort(group_order.begin(), group_order.begin() + cfg.topk_groups,
                        group_order.end(), by_value(group_score));
      std::fill(allowed.begin(), allowed.end(), char(0));
      for (int64_t q = 0; q < cfg.topk_groups; ++q) {
        std::fill(allowed.begin() + group_order[q] * per_group,
                  allowed.begin() + (group_order[q] + 1) * per_group, char(1));
      }
    }
    order.clear();
    for (int32_t j = 0; j < int32_t(e); ++j)
      if (allowed[j]) order.push_back(j);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), by_value(sel));
    double sum = 0;
    for (int64_t q = 0; q < k; ++q) sum += double(s[order[q]]);
    for (int64_t q = 0; q < k; ++q) {
      idx[i * k + q] = order[q];
      const double w = cfg.softmax ? double(s[order[q]]) : double(s[order[q]]) / sum;
      gates[i * k + q] = T(w * cfg.route_scale);
    }
  }
}

template <typename T>
void RouterGatesBackward(const T* dgates, const T* scores, const int32_t* idx, T* dscores,
                         int64_t n, const RouterConfig& cfg) {
  ScopedOp profile_op(Op::kRouter);
  const int64_t e = cfg.experts, k = cfg.top_k;
  const double r = cfg.route_scale;
  for (int64_t i = 0; i < n; ++i) {
    const T* s = scores + i * e;
    const int32_t* id = idx + i * k;
    const T* dg = dgates + i * k;
    T* ds = dscores + i * e;
    if (cfg.softmax) {
      for (int64_t q = 0; q < k; ++q) ds[id[q]] += T(r * double(dg[q]));
      continue;
    }
    // g_q = r s_q / S:  ds_j = r/S (dg_j − Σ_q dg_q s_q / S)
    double sum = 0, dot = 0;
    for (int64_t q = 0; q < k; ++q) sum += double(s[id[q]]);
    for (int64_t q = 0; q < k; ++q) dot += double(dg[q]) * double(s[id[q]]);
    for (int64_t q = 0; q < k; ++q) ds[id[q]] += T(r / sum * (double(dg[q]) - dot / sum));
  }
}

template <typename T>
double SeqBalanceLoss(const T* scores, const int32_t* idx, int64_t b, int64_t t, double alpha,
                      const RouterConfig& cfg, T* dscores, double dloss) {
  ScopedOp profile_op(Op::kRouter);
  const int64_t e = cfg.experts, k = cfg.top_k;
  std::vector<double> f(static_cast<size_t>(e)), p(static_cast<size_t>(e));
  double loss = 0;
  for (int64_t bi = 0; bi < b; ++bi) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(p.begin(), p.end(), 0.0);
    for (int64_t ti = 0; ti < t; ++ti) {
      const int64_t row = bi * t + ti;
      for (int64_t q = 0; q < k; ++q) f[idx[row * k + q]] += 1.0;
      const T* s = scores + row * e;
      double sum = 0;
      for (int64_t j = 0; j < e; ++j) sum += double(s[j]);
      for (int64_t j = 0; j < e; ++j) p[j] += double(s[j]) / sum;
    }
    const double f_scale = double(e) / (double(k) * double(t));
    double seq = 0;
    for (int64_t j = 0; j < e; ++j) seq += f[j] * f_scale * p[j] / double(t);
    loss += alpha * seq / double(b);
    if (dscores == nullptr) continue;
    // d/ds'_{j,t} = α f_j / (t b); through s' = s / Σ s: ds_j = (ds'_j − Σ_i ds'_i s'_i) / Σ s
    for (int64_t ti = 0; ti < t; ++ti) {
      const int64_t row = bi * t + ti;
      const T* s = scores + row * e;
      double sum = 0;
      for (int64_t j = 0; j < e; ++j) sum += double(s[j]);
      double dot = 0;
      for (int64_t j = 0; j < e; ++j)
        dot += alpha * f[j] * f_scale / (double(t) * double(b)) * double(s[j]) / sum;
      for (int64_t j = 0; j < e; ++j) {
        const double dsn = alpha * f[j] * f_scale / (double(t) * double(b));
        dscores[row * e + j] += T(dloss * (dsn - dot) / sum);
      }
    }
  }
  return loss;
}

template <typename T>
void RouterScoresBackward(const T* dscores, const T* scores, T* dlogits, int64_t n,
                          const RouterConfig& cfg) {
  ScopedOp profile_op(Op::kRouter);
  const int64_t e = cfg.experts;
  for (int64_t i = 0; i < n; ++i) {
    const T* s = scores + i * e;
    const T* ds = dscores + i * e;
    T* dl = dlogits + i * e;
    if (cfg.softmax) {
      double dot = 0;
      for (int64_t j = 0; j < e; ++j) dot += double(ds[j]) * double(s[j]);
      for (int64_t j = 0; j < e; ++j) dl[j] = T(double(s[j]) * (double(ds[j]) - dot));
    } else {
      for (int64_t j = 0; j < e; ++j) dl[j] = ds[j] * s[j] * (T(1) - s[j]);
    }
  }
}

#define MOERUN_INSTANTIATE(T)                                                           \
  template void RouterScores<T>(const T*, T*, int64_t, const RouterConfig&);            \
  template void RouterSelect<T>(const T*, const float*, int32_t*, T*, int64_t,          \
                                const RouterConfig&);                                   \
  template void RouterGatesBackward<T>(const T*, const T*, const int32_t*, T*, int64_t, \
                                       const RouterConfig&);                            \
  template double SeqBalanceLoss<T>(const T*, const int32_t*, int64_t, int64_t, double, \
                                    const RouterConfig&, T*, double);                   \
  template void RouterScoresBackward<T>(const T*, const T*, T*, int64_t, const RouterConfig&);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

template <typename T>
void UpdateBalanceBias(const int64_t* counts, int64_t experts, double gamma, T* bias) {
  double mean = 0;
  for (int64_t i = 0; i < experts; ++i) mean += double(counts[i]);
  mean /= double(experts);
  for (int64_t i = 0; i < experts; ++i) {
    const double load = double(counts[i]);
    const double sign = load < mean ? 1.0 : (load > mean ? -1.0 : 0.0);
    bias[i] = T(double(bias[i]) + gamma * sign);
  }
}

template void UpdateBalanceBias<float>(const int64_t*, int64_t, double, float*);
template void UpdateBalanceBias<double>(const int64_t*, int64_t, double, double*);

}  // namespace moerun::kernels::cpu
