#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace moerun::kernels::cpu {

template <typename T>
void EmbeddingForward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * d, table + int64_t(ids[i]) * d, d * sizeof(T));
}

template <typename T>
void EmbeddingBackward(const T* dout, const int32_t* ids, T* dtable, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n; ++i) {
    T* row = dtable + int64_t(ids[i]) * d;
    for (int64_t j = 0; j < d; ++j) row[j] += dout[i * d + j];
  }
}

template <typename T>
void RmsNormForward(const T* x, const T* w, T* y, T* rstd, int64_t n, int64_t d) {
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
  const int64_t half = hd / 2;
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
  for (int64_t i = 0; i < count; ++i) {
    const T g = gate[i];
    out[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

template <typename T>
void SwiGluBackward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t count) {
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
