// Element-wise and row-wise ops of the transformer, forward and backward, on the CPU.
// Layouts are row-major, one row per token: [N, D]. Instantiated for float and double.
// Backward functions that produce parameter gradients accumulate into them (+=), because
// gradients sum over micro-batches; activation gradients are written (=) unless stated.
#pragma once

#include <cstdint>

namespace moerun::kernels::cpu {

inline constexpr double kRmsNormEps = 1e-6;

// Embedding: out[n] = table[ids[n]].  table [V, D], ids [N], out [N, D].
template <typename T>
void EmbeddingForward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d);
// dtable[ids[n]] += dout[n], in token order (deterministic).
template <typename T>
void EmbeddingBackward(const T* dout, const int32_t* ids, T* dtable, int64_t n, int64_t d);

// RMSNorm: y = x / sqrt(mean(x²) + eps) * w.  x, y [N, D], w [D], rstd [N] (saved).
template <typename T>
void RmsNormForward(const T* x, const T* w, T* y, T* rstd, int64_t n, int64_t d);
// dx (=) and dw (+=).
template <typename T>
void RmsNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t n,
                     int64_t d);

// RoPE in Hugging Face Llama's rotate-half convention, in place on x [B, T, H, hd] (hd even):
// dimension i pairs with i + hd/2 and turns by pos * theta^(-2i/hd), pos = t.
// `inverse` turns the other way: that is the backward pass (a rotation's transpose).
template <typename T>
void Rope(T* x, int64_t b, int64_t t, int64_t h, int64_t hd, double theta, bool inverse);

// RoPE in DeepSeek's interleaved convention (MLA's RoPE parts; what the published DeepSeek-V3
// weights expect): dimension pair (2i, 2i+1) turns by pos * theta^(-2i/dim), in place on the
// `dim` values at x + r·row_stride + j·head_stride for rows r < B·T (pos = r mod T) and heads
// j < h. `inverse` turns the other way: the backward pass.
template <typename T>
void RopeInterleaved(T* x, int64_t b, int64_t t, int64_t h, int64_t row_stride, int64_t head_stride,
                     int64_t dim, double theta, bool inverse);

// SwiGLU: out = silu(gate) * up, all [N, F].
template <typename T>
void SwiGluForward(const T* gate, const T* up, T* out, int64_t count);
// dgate, dup (=).
template <typename T>
void SwiGluBackward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t count);

// Mean cross-entropy over N rows of logits [N, V] against targets [N]; returns the loss.
// dlogits (=) is d(loss)/d(logits) scaled by `dloss`; may be null for evaluation only.
template <typename T>
double CrossEntropy(const T* logits, const int32_t* targets, T* dlogits, int64_t n, int64_t v,
                    double dloss);

}  // namespace moerun::kernels::cpu
