#include "kernels/cpu/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/causal_softmax.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/op_profile.h"

namespace moerun::kernels::cpu {
namespace {

// Query rows per block: each block multiplies against keys [0, its last row], so about
// half of the T×T products (plus half a block) are computed; 64 keeps the GEMMs efficient.
constexpr int64_t kRowBlock = 64;

}  // namespace

template <typename T>
void MlaAttentionForward(const T* q, const T* kv, const T* kpe, T* out, T* probs, int64_t b,
                         int64_t t, const MlaDims& m, double scale) {
  ScopedOp profile_op(Op::kAttention);
  const int64_t h = m.heads, dq = m.nope + m.rope, dkv = m.nope + m.v;
  const int64_t qs = h * dq, kvs = h * dkv, os = h * m.v;  // row strides
  const T sc = T(scale);
  for (int64_t bi = 0; bi < b; ++bi) {
    const T* kp = kpe + bi * t * m.rope;
    for (int64_t hi = 0; hi < h; ++hi) {
      const T* qn = q + bi * t * qs + hi * dq;
      const T* kn = kv + bi * t * kvs + hi * dkv;
      const T* vv = kn + m.nope;
      T* p = probs + (bi * h + hi) * t * t;
      T* o = out + bi * t * os + hi * m.v;
      for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, t - r0), cols = r0 + rows;
        T* pb = p + r0 * t;
        Gemm<T>(false, true, rows, cols, m.nope, sc, qn + r0 * qs, qs, kn, kvs, T(0), pb, t);
        Gemm<T>(false, true, rows, cols, m.rope, sc, qn + r0 * qs + m.nope, qs, kp, m.rope, T(1),
                pb, t);
        for (int64_t r = 0; r < rows; ++r) CausalSoftmaxRow(pb + r * t, r0 + r, cols);
        Gemm<T>(false, false, rows, m.v, cols, T(1), pb, t, vv, kvs, T(0), o + r0 * os, os);
      }
    }
  }
}

template <typename T>
void MlaAttentionBackward(const T* dout, const T* q, const T* kv, const T* kpe, const T* probs,
                          T* dq, T* dkv, T* dkpe, int64_t b, int64_t t, const MlaDims& m,
                          double scale) {
  ScopedOp profile_op(Op::kAttention);
  const int64_t h = m.heads, dqw = m.nope + m.rope, dkvw = m.nope + m.v;
  const int64_t qs = h * dqw, kvs = h * dkvw, os = h * m.v;
  const T sc = T(scale);
  std::fill(dkv, dkv + b * t * kvs, T(0));
  std::fill(dkpe, dkpe + b * t * m.rope, T(0));
  std::vector<T> ds(static_cast<size_t>(kRowBlock * t));
  for (int64_t bi = 0; bi < b; ++bi) {
    const T* kp = kpe + bi * t * m.rope;
    T* dkp = dkpe + bi * t * m.rope;
    for (int64_t hi = 0; hi < h; ++hi) {
      const T* qn = q + bi * t * qs + hi * dqw;
      const T* kn = kv + bi * t * kvs + hi * dkvw;
      const T* vv = kn + m.nope;
      const T* dob = dout + bi * t * os + hi * m.v;
      T* dqn = dq + bi * t * qs + hi * dqw;
      T* dkn = dkv + bi * t * kvs + hi * dkvw;
      T* dvv = dkn + m.nope;
      const T* p = probs + (bi * h + hi) * t * t;
      for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, t - r0), cols = r0 + rows;
        const T* pb = p + r0 * t;
        const T* dob_r = dob + r0 * os;
        // dV[0, cols) += P_blockᵀ dO_block;  dP_block = dO_block Vᵀ.
        Gemm<T>(true, false, cols, m.v, rows, T(1), pb, t, dob_r, os, T(1), dvv, kvs);
        Gemm<T>(false, true, rows, cols, m.v, T(1), dob_r, os, vv, kvs, T(0), ds.data(), cols);
        for (int64_t r = 0; r < rows; ++r)
          CausalSoftmaxBackwardRow(pb + r * t, ds.data() + r * cols, r0 + r, cols);
        // dQ_block = scale dS K;  dK[0, cols) += scale dSᵀ Q_block (k_pe: over every head).
        Gemm<T>(false, false, rows, m.nope, cols, sc, ds.data(), cols, kn, kvs, T(0), dqn + r0 * qs,
                qs);
        Gemm<T>(false, false, rows, m.rope, cols, sc, ds.data(), cols, kp, m.rope, T(0),
                dqn + r0 * qs + m.nope, qs);
        Gemm<T>(true, false, cols, m.nope, rows, sc, ds.data(), cols, qn + r0 * qs, qs, T(1), dkn,
                kvs);
        Gemm<T>(true, false, cols, m.rope, rows, sc, ds.data(), cols, qn + r0 * qs + m.nope, qs,
                T(1), dkp, m.rope);
      }
    }
  }
}

#define MOERUN_INSTANTIATE(T)                                                                     \
  template void MlaAttentionForward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                       const MlaDims&, double);                                   \
  template void MlaAttentionBackward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, \
                                        T*, int64_t, int64_t, const MlaDims&, double);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cpu
