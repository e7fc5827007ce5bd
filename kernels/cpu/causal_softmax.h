// The row operations of causal softmax attention, shared by the CPU attention kernels
// (attention.cc, mla_attention.cc) so both compute the same bits. Internal to kernels/cpu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace moerun::kernels::cpu {

// The fp32 rows, vectorized (kernels/cpu/vector_math.h): ExpF, sums in 8 double lanes.
void CausalSoftmaxRowF32(float* row, int64_t i, int64_t cols);
void CausalSoftmaxBackwardRowF32(const float* p, float* ds, int64_t i, int64_t cols);

// Query row i: row[0..i] becomes softmax(row[0..i]) (the sum in double); row[i+1..cols) is
// zeroed, since the products after it read the whole row.
template <typename T>
void CausalSoftmaxRow(T* row, int64_t i, int64_t cols) {
  if constexpr (std::is_same_v<T, float>) return CausalSoftmaxRowF32(row, i, cols);
  T mx = row[0];
  for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
  double sum = 0;
  for (int64_t j = 0; j <= i; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += double(row[j]);
  }
  const T inv = T(1.0 / sum);
  for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
  std::fill(row + i + 1, row + cols, T(0));
}

// Row i of the softmax's backward, in place on ds (holding dP on entry):
// dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik) for j ≤ i, 0 for j in (i, cols).
template <typename T>
void CausalSoftmaxBackwardRow(const T* p, T* ds, int64_t i, int64_t cols) {
  if constexpr (std::is_same_v<T, float>) return CausalSoftmaxBackwardRowF32(p, ds, i, cols);
  double dot = 0;
  for (int64_t j = 0; j <= i; ++j) dot += double(p[j]) * double(ds[j]);
  for (int64_t j = 0; j <= i; ++j) ds[j] = p[j] * (ds[j] - T(dot));
  std::fill(ds + i + 1, ds + cols, T(0));
}

}  // namespace moerun::kernels::cpu
