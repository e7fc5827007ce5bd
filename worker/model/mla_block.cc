#include "worker/model/mla_block.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/elementwise.h"

namespace moerun::model {

namespace cpu = kernels::cpu;

double MlaShape::scale() const { return 1.0 / std::sqrt(double(nope + rope)); }

namespace {

template <typename T>
void Resize(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}

}  // namespace

template <typename T>
void MlaForward(const T* x, int64_t b, int64_t s, const MlaShape& m, const MlaWeights<T>& w,
                MlaActivations<T>& a, T* y, bool accumulate_y) {
  const int64_t n = b * s, d = m.d_model, h = m.heads, qr = m.q_lora_rank, kr = m.kv_lora_rank;
  const int64_t dr = m.rope, qw = m.q_width(), kvw = m.kv_width(), ow = m.out_width(),
                lw = m.latent_width();
  Resize(a.q, n * qw);
  if (qr > 0) {
    Resize(a.qa, n * qr);
    Resize(a.qa_norm, n * qr);
    Resize(a.qa_rstd, n);
    LinearForwardP(x, w.q_a, a.qa.data(), n, d, qr, m.precision);
    cpu::RmsNormForward(a.qa.data(), w.q_a_norm, a.qa_norm.data(), a.qa_rstd.data(), n, qr);
    LinearForwardP(a.qa_norm.data(), w.q_b, a.q.data(), n, qr, qw, m.precision);
  } else {
    LinearForwardP(x, w.q, a.q.data(), n, d, qw, m.precision);
  }
  cpu::RopeInterleaved(a.q.data() + m.nope, b, s, h, qw, m.nope + dr, dr, m.rope_theta, false);

  // The latent and the shared RoPE key come out of one projection; each is kept contiguous.
  Resize(a.kva, n * lw);
  Resize(a.ckv, n * kr);
  Resize(a.kpe, n * dr);
  LinearForwardP(x, w.kv_a, a.kva.data(), n, d, lw, m.precision);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = a.kva.data() + i * lw;
    std::copy(row, row + kr, a.ckv.data() + i * kr);
    std::copy(row + kr, row + lw, a.kpe.data() + i * dr);
  }
  cpu::RopeInterleaved(a.kpe.data(), b, s, 1, dr, dr, dr, m.rope_theta, false);
  Resize(a.ckv_norm, n * kr);
  Resize(a.ckv_rstd, n);
  cpu::RmsNormForward(a.ckv.data(), w.kv_a_norm, a.ckv_norm.data(), a.ckv_rstd.data(), n, kr);
  Resize(a.kv, n * kvw);
  LinearForwardP(a.ckv_norm.data(), w.kv_b, a.kv.data(), n, kr, kvw, m.precision);

  Resize(a.probs, b * h * s * s);
  Resize(a.att, n * ow);
  cpu::MlaAttentionForward(a.q.data(), a.kv.data(), a.kpe.data(), a.att.data(), a.probs.data(), b,
                           s, m.dims(), m.scale());
  LinearForwardP(a.att.data(), w.o, y, n, ow, d, m.precision, accumulate_y);
}

template <typename T>
void MlaBackward(const T* dy, const T* x, int64_t b, int64_t s, const MlaShape& m,
                 const MlaWeights<T>& w, MlaActivations<T>& a, T* dx, bool accumulate_dx) {
  const int64_t n = b * s, d = m.d_model, h = m.heads, qr = m.q_lora_rank, kr = m.kv_lora_rank;
  const int64_t dr = m.rope, qw = m.q_width(), kvw = m.kv_width(), ow = m.out_width(),
                lw = m.latent_width();
  Resize(a.datt, n * ow);
  LinearBackwardP(dy, a.att.data(), w.o, a.datt.data(), w.d_o, n, ow, d, false, m.precision);
  Resize(a.dq, n * qw);
  Resize(a.dkv, n * kvw);
  Resize(a.dkpe, n * dr);
  cpu::MlaAttentionBackward(a.datt.data(), a.q.data(), a.kv.data(), a.kpe.data(), a.probs.data(),
                            a.dq.data(), a.dkv.data(), a.dkpe.data(), b, s, m.dims(), m.scale());
  cpu::RopeInterleaved(a.dq.data() + m.nope, b, s, h, qw, m.nope + dr, dr, m.rope_theta, true);
  cpu::RopeInterleaved(a.dkpe.data(), b, s, 1, dr, dr, dr, m.rope_theta, true);

  // Keys and values: kv_b_proj, the latent's RMSNorm, then kv_a_proj from [dlatent, dk_pe].
  Resize(a.dnormed, n * std::max(kr, qr));
  Resize(a.dnorm_in, n * std::max(kr, qr));
  LinearBackwardP(a.dkv.data(), a.ckv_norm.data(), w.kv_b, a.dnormed.data(), w.dkv_b, n, kr, kvw,
                  false, m.precision);
  cpu::RmsNormBackward(a.dnormed.data(), a.ckv.data(), w.kv_a_norm, a.ckv_rstd.data(),
                       a.dnorm_in.data(), w.dkv_a_norm, n, kr);
  Resize(a.kva, n * lw);
  for (int64_t i = 0; i < n; ++i) {
    T* row = a.kva.data() + i * lw;
    std::copy_n(a.dnorm_in.data() + i * kr, kr, row);
    std::copy_n(a.dkpe.data() + i * dr, dr, row + kr);
  }
  LinearBackwardP(a.kva.data(), x, w.kv_a, dx, w.dkv_a, n, d, lw, accumulate_dx, m.precision);

  // Queries.
  if (qr > 0) {
    LinearBackwardP(a.dq.data(), a.qa_norm.data(), w.q_b, a.dnormed.data(), w.dq_b, n, qr, qw,
                    false, m.precision);
    cpu::RmsNormBackward(a.dnormed.data(), a.qa.data(), w.q_a_norm, a.qa_rstd.data(),
                         a.dnorm_in.data(), w.dq_a_norm, n, qr);
    LinearBackwardP(a.dnorm_in.data(), x, w.q_a, dx, w.dq_a, n, d, qr, true, m.precision);
  } else {
    LinearBackwardP(a.dq.data(), x, w.q, dx, w.dq, n, d, qw, true, m.precision);
  }
}

#define MOERUN_INSTANTIATE(T)                                                                    \
  template void MlaForward<T>(const T*, int64_t, int64_t, const MlaShape&, const MlaWeights<T>&, \
                              MlaActivations<T>&, T*, bool);                                     \
  template void MlaBackward<T>(const T*, const T*, int64_t, int64_t, const MlaShape&,            \
                               const MlaWeights<T>&, MlaActivations<T>&, T*, bool);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::model
