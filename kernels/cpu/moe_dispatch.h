// Token dispatch and combine for MoE layers on the CPU (no token dropping).
// A DispatchPlan sorts the N×K (token, slot) pairs by expert, stably by token, so each
// expert's rows are contiguous and in token order: expert e owns rows
// [offsets[e], offsets[e+1]) of the dispatch buffer [N·K, D].
//   row_token[r], row_slot[r]: which token and which of its K choices row r is
//   slot_row[t·K + k]:         the row holding token t's k-th choice
// Combine sums each token's K expert outputs in slot order, so results are deterministic.
#pragma once

#include <cstdint>
#include <vector>

namespace moerun::kernels::cpu {

struct DispatchPlan {
  int64_t tokens = 0, top_k = 0, experts = 0;
  std::vector<int64_t> counts;               // [E] rows per expert
  std::vector<int64_t> offsets;              // [E + 1]
  std::vector<int32_t> row_token, row_slot;  // [N·K]
  std::vector<int64_t> slot_row;             // [N·K]
};

// idx [N, K] expert ids in [0, experts).
DispatchPlan PlanDispatch(const int32_t* idx, int64_t n, int64_t k, int64_t experts);

// buf[r] = x[row_token[r]]: x [N, D] -> buf [N·K, D].
template <typename T>
void DispatchRows(const T* x, const DispatchPlan& plan, T* buf, int64_t d);
// dx[t] (+=) Σ_k dbuf[slot_row[t·K+k]], k in order.
template <typename T>
void DispatchRowsBackward(const T* dbuf, const DispatchPlan& plan, T* dx, int64_t d);

// Expert parallelism regroups rows it received by local expert and back (a permutation):
// out[i] = in[index[i]], and out[index[i]] = in[i], for i < rows; rows of d values.
template <typename T>
void GatherRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d);
template <typename T>
void ScatterRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d);

// y[t] (+=) Σ_k gates[t,k] · out[slot_row[t·K+k]]: out [N·K, D], gates [N, K], y [N, D].
template <typename T>
void Combine(const T* out, const T* gates, const DispatchPlan& plan, T* y, int64_t d);
// dout (=) gates · dy per row; dgates (=) dot(dy[t], out[row]).
template <typename T>
void CombineBackward(const T* dy, const T* out, const T* gates, const DispatchPlan& plan, T* dout,
                     T* dgates, int64_t d);

}  // namespace moerun::kernels::cpu
