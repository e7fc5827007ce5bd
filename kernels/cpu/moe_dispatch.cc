#include "kernels/cpu/moe_dispatch.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {

DispatchPlan PlanDispatch(const int32_t* idx, int64_t n, int64_t k, int64_t experts) {
  ScopedOp profile_op(Op::kDispatch);
  DispatchPlan p;
  p.tokens = n;
  p.top_k = k;
  p.experts = experts;
  p.counts.assign(static_cast<size_t>(experts), 0);
  for (int64_t i = 0; i < n * k; ++i) ++p.counts[idx[i]];
  p.offsets.assign(static_cast<size_t>(experts + 1), 0);
  for (int64_t e = 0; e < experts; ++e) p.offsets[e + 1] = p.offsets[e] + p.counts[e];
  p.row_token.resize(static_cast<size_t>(n * k));
  p.row_slot.resize(static_cast<size_t>(n * k));
  p.slot_row.resize(static_cast<size_t>(n * k));
  std::vector<int64_t> next(p.offsets.begin(), p.offsets.end() - 1);
  for (int64_t t = 0; t < n; ++t) {  // counting sort: stable by token within each expert
    for (int64_t s = 0; s < k; ++s) {
      const int64_t r = next[idx[t * k + s]]++;
      p.row_token[r] = int32_t(t);
      p.row_slot[r] = int32_t(s);
      p.slot_row[t * k + s] = r;
    }
  }
  return p;
}

namespace {

// row[j] += g · src[j]
MOERUN_SIMD_CLONES void AddScaled(float* __restrict row, const float* __restrict src, float g,
                                  int64_t d) {
  for (int64_t j = 0; j < d; ++j) row[j] += g * src[j];
}

MOERUN_SIMD_CLONES void AddRow(float* __restrict row, const float* __restrict src, int64_t d) {
  for (int64_t j = 0; j < d; ++j) row[j] += src[j];
}

// dout[j] = g · dy[j]; returns Σ dy[j]·out[j] in double, summed in 8 interleaved lanes added in
// a fixed order (vectorizable and the same bits every run).
MOERUN_SIMD_CLONES double ScaleAndDot(const float* __restrict dy, const float* __restrict out,
                                      float g, float* __restrict dout, int64_t d) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += double(dy[j + l]) * double(out[j + l]);
  for (; j < d; ++j) lane[0] += double(dy[j]) * double(out[j]);
  for (int64_t i = 0; i < d; ++i) dout[i] = g * dy[i];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

template <typename T>
void DispatchRows(const T* x, const DispatchPlan& plan, T* buf, int64_t d) {
  ScopedOp profile_op(Op::kDispatch);
  const int64_t rows = plan.tokens * plan.top_k;
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(buf + r * d, x + plan.row_token[r] * d, d * sizeof(T));
}

template <typename T>
void DispatchRowsBackward(const T* dbuf, const DispatchPlan& plan, T* dx, int64_t d) {
  ScopedOp profile_op(Op::kDispatch);
  for (int64_t t = 0; t < plan.tokens; ++t) {
    T* row = dx + t * d;
    for (int64_t s = 0; s < plan.top_k; ++s) {
      const T* src = dbuf + plan.slot_row[t * plan.top_k + s] * d;
      if constexpr (std::is_same_v<T, float>) {
        AddRow(row, src, d);
      } else {
        for (int64_t j = 0; j < d; ++j) row[j] += src[j];
      }
    }
  }
}

template <typename T>
void Combine(const T* out, const T* gates, const DispatchPlan& plan, T* y, int64_t d) {
  ScopedOp profile_op(Op::kCombine);
  for (int64_t t = 0; t < plan.tokens; ++t) {
    T* row = y + t * d;
    for (int64_t s = 0; s < plan.top_k; ++s) {
      const T g = gates[t * plan.top_k + s];
      const T* src = out + plan.slot_row[t * plan.top_k + s] * d;
      if constexpr (std::is_same_v<T, float>) {
        AddScaled(row, src, g, d);
      } else {
        for (int64_t j = 0; j < d; ++j) row[j] += g * src[j];
      }
    }
  }
}

template <typename T>
void CombineBackward(const T* dy, const T* out, const T* gates, const DispatchPlan& plan, T* dout,
                     T* dgates, int64_t d) {
  ScopedOp profile_op(Op::kCombine);
  for (int64_t t = 0; t < plan.tokens; ++t) {
    const T* dyr = dy + t * d;
    for (int64_t s = 0; s < plan.top_k; ++s) {
      const int64_t slot = t * plan.top_k + s, r = plan.slot_row[slot];
      const T g = gates[slot];
      if constexpr (std::is_same_v<T, float>) {
        dgates[slot] = float(ScaleAndDot(dyr, out + r * d, g, dout + r * d, d));
        continue;
      }
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) {
        dot += double(dyr[j]) * double(out[r * d + j]);
        dout[r * d + j] = g * dyr[j];
      }
      dgates[slot] = T(dot);
    }
  }
}

template <typename T>
void GatherRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d) {
  ScopedOp profile_op(Op::kDispatch);
  for (int64_t i = 0; i < rows; ++i) std::copy_n(in + int64_t(index[i]) * d, d, out + i * d);
}

template <typename T>
void ScatterRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d) {
  ScopedOp profile_op(Op::kDispatch);
  for (int64_t i = 0; i < rows; ++i) std::copy_n(in + i * d, d, out + int64_t(index[i]) * d);
}

#define MOERUN_INSTANTIATE(T)                                                                 \
  template void GatherRows<T>(const T*, const int32_t*, T*, int64_t, int64_t);                \
  template void ScatterRows<T>(const T*, const int32_t*, T*, int64_t, int64_t);               \
  template void DispatchRows<T>(const T*, const DispatchPlan&, T*, int64_t);                  \
  template void DispatchRowsBackward<T>(const T*, const DispatchPlan&, T*, int64_t);          \
  template void Combine<T>(const T*, const T*, const DispatchPlan&, T*, int64_t);             \
  template void CombineBackward<T>(const T*, const T*, const T*, const DispatchPlan&, T*, T*, \
                                   int64_t);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cpu
