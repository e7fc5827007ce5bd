// AdamW with decoupled weight decay, and global-norm gradient clipping, on fp32 master
// weights (docs/architecture.md §4). Pure functions over flat buffers; thread-safe on disjoint
// buffers.
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0;  // applied only where `decay` is passed true (matrices)
  int64_t step = 1;         // 1-based, for bias correction
};

// p -= lr · (m̂ / (sqrt(v̂) + eps) + wd · p), with m, v updated in place.
void AdamWUpdate(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s,
                 bool decay);

// Σ g² accumulated in double, in index order (deterministic).
double SumOfSquares(const float* g, int64_t n);

// The factor that brings a gradient of norm `norm` to at most `max_norm` (1 when it is
// within, or when max_norm is 0: clipping off).
double ClipFactor(double norm, double max_norm);

void ScaleInPlace(float* g, int64_t n, float factor);

}  // namespace moerun::kernels::cpu
