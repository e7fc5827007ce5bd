// CUDA twins of kernels/cpu/moe_dispatch.h: the dispatch plan (a counting sort of the N·K
// (token, slot) pairs by expert, stable by token), dispatch and combine, forward and backward.
// No output order or sum depends on atomics or scheduling: each expert's rows are assigned by
// one thread walking the pairs in order, and each token's K contributions are summed in slot
// order, so the plan equals the CPU's exactly and results are deterministic.
// T is the activation storage type (float or __nv_bfloat16); gates are fp32 (the router's).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moerun::kernels::cuda {

// Device arrays the caller allocates; the layout of cpu::DispatchPlan.
struct DeviceDispatchPlan {
  int64_t tokens = 0, top_k = 0, experts = 0;
  int64_t* counts = nullptr;     // [E] rows per expert
  int64_t* offsets = nullptr;    // [E + 1]: expert e owns rows [offsets[e], offsets[e+1])
  int32_t* row_token = nullptr;  // [N·K] the token of each row
  int32_t* row_slot = nullptr;   // [N·K] which of its K choices
  int64_t* slot_row = nullptr;   // [N·K] token t's k-th choice is row slot_row[t·K + k]
};

// Fills `plan` from idx [N, K] (expert ids in [0, experts)); plan.tokens/top_k/experts set.
cudaError_t LaunchPlanDispatch(const int32_t* idx, const DeviceDispatchPlan& plan,
                               cudaStream_t stream);

// buf[r] = x[row_token[r]]: x [N, D] -> buf [N·K, D].
template <typename T>
cudaError_t LaunchDispatchRows(const T* x, const DeviceDispatchPlan& plan, T* buf, int64_t d,
                               cudaStream_t stream);
// dx[t] (+=) Σ_k dbuf[slot_row[t·K+k]], k in order.
template <typename T>
cudaError_t LaunchDispatchRowsBackward(const T* dbuf, const DeviceDispatchPlan& plan, T* dx,
                                       int64_t d, cudaStream_t stream);
// out[i] = in[index[i]] and out[index[i]] = in[i] for i < rows (rows of d values; index a
// permutation for the scatter): expert parallelism's regrouping of received rows.
template <typename T>
cudaError_t LaunchGatherRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d,
                             cudaStream_t stream);
template <typename T>
cudaError_t LaunchScatterRows(const T* in, const int32_t* index, T* out, int64_t rows, int64_t d,
                              cudaStream_t stream);
// y[t] (+=) Σ_k gates[t,k] · out[slot_row[t·K+k]], k in order.
template <typename T>
cudaError_t LaunchCombine(const T* out, const float* gates, const DeviceDispatchPlan& plan, T* y,
                          int64_t d, cudaStream_t stream);
// dout (=) gates · dy per row; dgates (=) dot(dy[t], out[row]) (fixed-order block sum).
template <typename T>
cudaError_t LaunchCombineBackward(const T* dy, const T* out, const float* gates,
                                  const DeviceDispatchPlan& plan, T* dout, float* dgates, int64_t d,
                                  cudaStream_t stream);

}  // namespace moerun::kernels::cuda
