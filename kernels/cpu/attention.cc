#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/causal_softmax.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/op_profile.h"

namespace moerun::kernels::cpu {

template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t b, int64_t t,
                      int64_t h, int64_t dk, int64_t dv, double scale) {
  ScopedOp profile_op(Op::kAttention);
  const int64_t qs = h * dk, vs = h * dv;  // row strides of q/k and v/out
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      const T* qb = q + bi * t * qs + hi * dk;
      const T* kb = k + bi * t * qs + hi * dk;
      const T* vb = v + bi * t * vs + hi * dv;
      T* p = probs + (bi * h + hi) * t * t;
      // S = scale · Q Kᵀ, then a causal softmax per row.
      Gemm<T>(false, true, t, t, dk, T(scale), qb, qs, kb, qs, T(0), p, t);
      for (int64_t i = 0; i < t; ++i) CausalSoftmaxRow(p + i * t, i, t);
      Gemm<T>(false, false, t, dv, t, T(1), p, t, vb, vs, T(0), out + bi * t * vs + hi * dv, vs);
    }
  }
}

template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                       T* dk_out, T* dv_out, int64_t b, int64_t t, int64_t h, int64_t dk,
                       int64_t dv, double scale) {
  ScopedOp profile_op(Op::kAttention);
  const int64_t qs = h * dk, vs = h * dv;
  std::vector<T> ds(static_cast<size_t>(t * t));
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      const int64_t qo = bi * t * qs + hi * dk, vo = bi * t * vs + hi * dv;
      const T* p = probs + (bi * h + hi) * t * t;
      // dV = Pᵀ dO;  dP = dO Vᵀ
      Gemm<T>(true, false, t, dv, t, T(1), p, t, dout + vo, vs, T(0), dv_out + vo, vs);
      Gemm<T>(false, true, t, t, dv, T(1), dout + vo, vs, v + vo, vs, T(0), ds.data(), t);
      // dS = P ⊙ (dP − rowsum(P ⊙ dP)); zero above the diagonal because P is.
      for (int64_t i = 0; i < t; ++i) CausalSoftmaxBackwardRow(p + i * t, ds.data() + i * t, i, t);
      // dQ = scale · dS K;  dK = scale · dSᵀ Q
      Gemm<T>(false, false, t, dk, t, T(scale), ds.data(), t, k + qo, qs, T(0), dq + qo, qs);
      Gemm<T>(true, false, t, dk, t, T(scale), ds.data(), t, q + qo, qs, T(0), dk_out + qo, qs);
    }
  }
}

#define MOERUN_INSTANTIATE(T)                                                                      \
  template void AttentionForward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,        \
                                    int64_t, int64_t, int64_t, double);                            \
  template void AttentionBackward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                     int64_t, int64_t, int64_t, int64_t, int64_t, double);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cpu
