#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/vector_math.h"

namespace moerun::kernels::cpu {
namespace {

// The fp32 SwiGLU loops with ExpF, so they vectorize.
MOERUN_SIMD_CLONES void SwiGluForwardF32(const float* __restrict gate, const float* __restrict up,
                                         float* __restrict out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + ExpF(-g)) * up[i];
  }
}

MOERUN_SIMD_CLONES void SwiGluBackwardF32(const float* __restrict dout,
                                          const float* __restrict gate, const float* __restrict up,
                                          float* __restrict dgate, float* __restrict dup,
                                          int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    const float sig = 1.0f / (1.0f + ExpF(-g));
    const float silu = g * sig;
    dup[i] = dout[i] * silu;
    dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
  }
}

MOERUN_SIMD_CLONES void NormScale(const float* __restrict x, const float* __restrict w, float r,
                                  float* __restrict y, int64_t d) {
  for (int64_t j = 0; j < d; ++j) y[j] = x[j] * r * w[j];
}

MOERUN_SIMD_CLONES void NormBackwardRow(const float* __restrict dy, const float* __restrict x,
                                        const float* __restrict w, float r, float c,
                                        float* __restrict dx, float* __restrict dw, int64_t d) {
  for (int64_t j = 0; j < d; ++j) {
    dx[j] = dy[j] * w[j] * r - x[j] * c;
    dw[j] += dy[j] * x[j] * r;
  }
}

// cos, sin and −sin of pos · theta^(-2i/hd) for pos < t, i < hd/2 ([t, hd/2] each), the same
// values the double loop below rounds to float. Kept per thread for the last shape: every
// layer of a model asks for the same one.
struct RopeTable {
  int64_t t = -1, hd = -1;
  double theta = 0;
  std::vector<float> cos, sin, neg_sin;
};

const RopeTable& RopeTableFor(int64_t t, int64_t hd, double theta) {
  thread_local RopeTable table;
  if (table.t == t && table.hd == hd && table.theta == theta) return table;
  const int64_t half = hd / 2;
  table.cos.resize(static_cast<size_t>(t * half));
  table.sin.resize(table.cos.size());
  table.neg_sin.resize(table.cos.size());
  for (int64_t pos = 0; pos < t; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos) * std::pow(theta, -2.0 * double(i) / double(hd));
      const size_t k = size_t(pos * half + i);
      table.cos[k] = float(std::cos(angle));
      table.sin[k] = float(std::sin(angle));
      table.neg_sin[k] = float(-std::sin(angle));
    }
  }
  table.t = t;
  table.hd = hd;
  table.theta = theta;
  return table;
}

// One rotate-half RoPE row of a head: pairs (i, i + half), cos/sin per i.
MOERUN_SIMD_CLONES void RotateHalf(float* __restrict v, const float* __restrict c,
                                   const float* __restrict s, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c[i] - x2 * s[i];
    v[i + half] = x2 * c[i] + x1 * s[i];
  }
}

// Cross-entropy of one row of logits: returns log Σ e^(row − mx) and leaves e^(row − mx) in e.
MOERUN_SIMD_CLONES void ExpShifted(const float* __restrict row, float mx, float* __restrict e,
                                   int64_t v) {
  for (int64_t j = 0; j < v; ++j) e[j] = ExpF(row[j] - mx);
}

MOERUN_SIMD_CLONES void ScaleRow(const float* __restrict e, float s, float* __restrict out,
                                 int64_t v) {
  for (int64_t j = 0; j < v; ++j) out[j] = e[j] * s;
}

double CrossEntropyF32(const float* logits, const int32_t* targets, float* dlogits, int64_t n,
                       int64_t v, double dloss) {
  std::vector<float> e(static_cast<size_t>(v));
  double total = 0;
  const double scale = dloss / double(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * v;
    const float mx = MaxF(row, v);
    ExpShifted(row, mx, e.data(), v);
    const double sum = SumF64(e.data(), v);
    const double lse = double(mx) + std::log(sum);
    total += lse - double(row[targets[i]]);
    if (dlogits != nullptr) {
      // p_j = e_j / sum; d = (p − onehot) · dloss / n
      float* out = dlogits + i * v;
      ScaleRow(e.data(), float(scale / sum), out, v);
      out[targets[i]] -= float(scale);
    }
  }
  return n > 0 ? total / double(n) : 0.0;
}

}  // namespace

template <typename T>
void EmbeddingForward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d) {
  ScopedOp profile_op(Op::kEmbedding);
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * d, table + int64_t(ids[i]) * d, d * sizeof(T));
}

template <typename T>
void EmbeddingBackward(const T* dout, const int32_t* ids, T* dtable, int64_t n, int64_t d) {
  ScopedOp profile_op(Op::kEmbedding);
  for (int64_t i = 0; i < n; ++i) {
    T* row = dtable + int64_t(ids[i]) * d;
    for (int64_t j = 0; j < d; ++j) row[j] += dout[i * d + j];
  }
}

template <typename T>
void RmsNormForward(const T* x, const T* w, T* y, T* rstd, int64_t n, int64_t d) {
  ScopedOp profile_op(Op::kRmsNorm);
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * d;
      const float r = float(1.0 / std::sqrt(DotF64(xi, xi, d) / double(d) + kRmsNormEps));
      rstd[i] = r;
      NormScale(xi, w, r, y + i * d, d);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(xi[j]) * double(xi[j]);
    const T r = T(1.0 / std::sqrt(ss / double(d) + kRmsNormEps));
    rstd[i] = r;
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = xi[j] * r * w[j];
  }
}

template <typename T>
void RmsNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t n,
                     int64_t d) {
  ScopedOp profile_op(Op::kRmsNorm);
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = rstd[i];
      const float c = float(Dot3F64(dy + i * d, w, x + i * d, d) / double(d)) * r * r * r;
      NormBackwardRow(dy + i * d, x + i * d, w, r, c, dx + i * d, dw, d);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    const T* dyi = dy + i * d;
    const T r = rstd[i];
    // y = x r w;  dx = r (dy w) - x r³ mean(dy w x)
    double dot = 0;
    for (int64_t j = 0; j < d; ++j) dot += double(dyi[j]) * double(w[j]) * double(xi[j]);
    const T c = T(dot / double(d)) * r * r * r;
    for (int64_t j = 0; j < d; ++j) {
      dx[i * d + j] = dyi[j] * w[j] * r - xi[j] * c;
      dw[j] += dyi[j] * xi[j] * r;
    }
  }
}

template <typename T>
void Rope(T* x, int64_t b, int64_t t, int64_t h, int64_t hd, double theta, bool inverse) {
  ScopedOp profile_op(Op::kRope);
  const int64_t half = hd / 2;
  if constexpr (std::is_same_v<T, float>) {
    const RopeTable& table = RopeTableFor(t, hd, theta);
    for (int64_t pos = 0; pos < t; ++pos) {
      const float* c = table.cos.data() + pos * half;
      const float* s = (inverse ? table.neg_sin : table.sin).data() + pos * half;
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t hi = 0; hi < h; ++hi)
          RotateHalf(x + ((bi * t + pos) * h + hi) * hd, c, s, half);
    }
    return;
  }
  for (int64_t pos = 0; pos < t; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos) * std::pow(theta, -2.0 * double(i) / double(hd));
      const T c = T(std::cos(angle));
      const T s = inverse ? T(-std::sin(angle)) : T(std::sin(angle));
      for (int64_t bi = 0; bi < b; ++bi) {
        for (int64_t hi = 0; hi < h; ++hi) {
          T* v = x + ((bi * t + pos) * h + hi) * hd;
          const T x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c - x2 * s;
          v[i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
}

template <typename T>
void RopeInterleaved(T* x, int64_t b, int64_t t, int64_t h, int64_t row_stride, int64_t head_stride,
                     int64_t dim, double theta, bool inverse) {
  ScopedOp profile_op(Op::kRope);
  const int64_t half = dim / 2;
  std::vector<T> cs(static_cast<size_t>(2 * half));
  for (int64_t pos = 0; pos < t; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos) * std::pow(theta, -2.0 * double(i) / double(dim));
      cs[size_t(2 * i)] = T(std::cos(angle));
      cs[size_t(2 * i + 1)] = inverse ? T(-std::sin(angle)) : T(std::sin(angle));
    }
    for (int64_t bi = 0; bi < b; ++bi) {
      for (int64_t hi = 0; hi < h; ++hi) {
        T* v = x + (bi * t + pos) * row_stride + hi * head_stride;
        for (int64_t i = 0; i < half; ++i) {
          const T c = cs[size_t(2 * i)], s = cs[size_t(2 * i + 1)];
          const T x1 = v[2 * i], x2 = v[2 * i + 1];
          v[2 * i] = x1 * c - x2 * s;
          v[2 * i + 1] = x2 * c + x1 * s;
        }
      }
    }
  }
}

template <typename T>
void SwiGluForward(const T* gate, const T* up, T* out, int64_t count) {
  ScopedOp profile_op(Op::kSwiGlu);
  if constexpr (std::is_same_v<T, float>) return SwiGluForwardF32(gate, up, out, count);
  for (int64_t i = 0; i < count; ++i) {
    const T g = gate[i];
    out[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

template <typename T>
void SwiGluBackward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t count) {
  ScopedOp profile_op(Op::kSwiGlu);
  if constexpr (std::is_same_v<T, float>) {
    return SwiGluBackwardF32(dout, gate, up, dgate, dup, count);
  }
  for (int64_t i = 0; i < count; ++i) {
    const T g = gate[i];
    const T sig = T(1) / (T(1) + std::exp(-g));
    const T silu = g * sig;
    dup[i] = dout[i] * silu;
    dgate[i] = dout[i] * up[i] * sig * (T(1) + g * (T(1) - sig));
  }
}

template <typename T>
double CrossEntropy(const T* logits, const int32_t* targets, T* dlogits, int64_t n, int64_t v,
                    double dloss) {
  ScopedOp profile_op(Op::kCrossEntropy);
  if constexpr (std::is_same_v<T, float>) {
    return CrossEntropyF32(logits, targets, dlogits, n, v, dloss);
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * v;
    const T mx = *std::max_element(row, row + v);
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(double(row[j] - mx));
    const double lse = double(mx) + std::log(sum);
    total += lse - double(row[targets[i]]);
    if (dlogits != nullptr) {
      const double scale = dloss / double(n);
      for (int64_t j = 0; j < v; ++j) {
        const double p = std::exp(double(row[j]) - lse);
        dlogits[i * v + j] = T((p - (j == targets[i] ? 1.0 : 0.0)) * scale);
      }
    }
  }
  return n > 0 ? total / double(n) : 0.0;
}

#define MOERUN_INSTANTIATE(T)                                                                \
  template void EmbeddingForward<T>(const T*, const int32_t*, T*, int64_t, int64_t);         \
  template void EmbeddingBackward<T>(const T*, const int32_t*, T*, int64_t, int64_t);        \
  template void RmsNormForward<T>(const T*, const T*, T*, T*, int64_t, int64_t);             \
  template void RmsNormBackward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t,  \
                                   int64_t);                                                 \
  template void Rope<T>(T*, int64_t, int64_t, int64_t, int64_t, double, bool);               \
  template void RopeInterleaved<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                   double, bool);                                            \
  template void SwiGluForward<T>(const T*, const T*, T*, int64_t);                           \
  template void SwiGluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t);            \
  template double CrossEntropy<T>(const T*, const int32_t*, T*, int64_t, int64_t, double);
MOERUN_INSTANTIATE(float)
MOERUN_INSTANTIATE(double)
#undef MOERUN_INSTANTIATE

}  // namespace moerun::kernels::cpu
