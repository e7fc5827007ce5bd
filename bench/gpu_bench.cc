#include "bench/gpu_bench.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <curand.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <vector>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/fp8_gemm.cuh"
#include "kernels/cuda/fp8_quantize.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/runtime_info.h"
#include "worker/model/cuda/fp8_linear.h"
#include "worker/model/cuda/moe_layer_cuda.h"

namespace moerun::bench {
namespace {

constexpr int kSkip = 77;

bool HaveGpu() {
  const std::string why = kernels::cuda::QueryRuntimeInfo().NoDeviceReason();
  if (!why.empty()) std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
  return why.empty();
}

// A device buffer of n values drawn from N(0, std²) on the GPU (cuRAND, then a cast to T):
// filling billions of weights on the host would take longer than the benchmark.
template <typename T>
T* Filled(size_t n, float std, uint32_t seed) {
  const size_t even = n + (n & 1);  // cuRAND draws normals in pairs
  float* f = nullptr;
  T* p = nullptr;
  if (cudaMalloc(&f, even * sizeof(float)) != cudaSuccess) return nullptr;
  curandGenerator_t gen;
  const bool created =
      curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10) == CURAND_STATUS_SUCCESS;
  bool ok = created && curandSetPseudoRandomGeneratorSeed(gen, seed) == CURAND_STATUS_SUCCESS &&
            curandGenerateNormal(gen, f, even, 0.0f, std) == CURAND_STATUS_SUCCESS;
  if (created) curandDestroyGenerator(gen);
  if (!ok) {
    cudaFree(f);
    return nullptr;
  }
  if (ok && std::is_same_v<T, float>) return reinterpret_cast<T*>(f);
  ok = ok && cudaMalloc(&p, n * sizeof(T)) == cudaSuccess &&
       kernels::cuda::LaunchCastFromFloat<T>(f, p, int64_t(n), nullptr) == cudaSuccess &&
       cudaDeviceSynchronize() == cudaSuccess;
  cudaFree(f);
  return ok ? p : nullptr;
}

template <typename F>
double MedianMs(int reps, cudaStream_t stream, F&& f) {
  f();
  cudaStreamSynchronize(stream);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, stream);
    f();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <typename T>
double GemmTflops(const GemmGpuArgs& a, cublasHandle_t h, cudaStream_t stream) {
  T* x = Filled<T>(size_t(a.m * a.k), 1.0f, 1);
  T* w = Filled<T>(size_t(a.k * a.n), 1.0f, 2);
  T* c = nullptr;
  cudaMalloc(&c, size_t(a.m * a.n) * sizeof(T));
  cublasStatus_t status = x && w && c ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
  const double ms = status != CUBLAS_STATUS_SUCCESS ? 0 : MedianMs(a.reps, stream, [&] {
    const cublasStatus_t s =
        kernels::cuda::Gemm<T>(h, false, false, a.m, a.n, a.k, 1.0f, x, a.k, w, a.n, 0.0f, c, a.n);
    if (s != CUBLAS_STATUS_SUCCESS) status = s;
  });
  cudaFree(x);
  cudaFree(w);
  cudaFree(c);
  if (status != CUBLAS_STATUS_SUCCESS || ms <= 0) {
    std::fprintf(stderr, "gemm-gpu: cuBLAS status %d (or out of memory)\n", int(status));
    return -1;  // no peak: callers report the failure
  }
  return 2.0 * double(a.m) * double(a.n) * double(a.k) / ms / 1e9;
}

// fp8 with DeepSeek's scaling: x [m, k] in 1x128 tiles, W [n, k] in 128x128 blocks (quantized
// once, as weights are once per step), y = x · Wᵀ in bf16 through cuBLASLt. Reported: the GEMM
// alone, the GEMM plus quantizing x (what a forward pays per call), and bf16's cuBLAS GEMM at
// the same shape, measured in the same run.
int GemmFp8(const GemmGpuArgs& a, cublasHandle_t h, cudaStream_t stream) {
  using bf16 = __nv_bfloat16;
  bf16* x = Filled<bf16>(size_t(a.m * a.k), 1.0f, 1);
  bf16* w = Filled<bf16>(size_t(a.n * a.k), 0.02f, 2);
  __nv_fp8_e4m3 *qx = nullptr, *qw = nullptr;
  float *sx = nullptr, *sw = nullptr;
  bf16* y = nullptr;
  void* workspace = nullptr;
  const size_t workspace_bytes = size_t(32) << 20;
  cudaMalloc(&qx, size_t(a.m * a.k));
  cudaMalloc(&qw, size_t(a.n * a.k));
  cudaMalloc(&sx, size_t(kernels::cuda::Tiles1x128ScaleCount(a.m, a.k)) * sizeof(float));
  cudaMalloc(&sw, size_t(kernels::cuda::Blocks128ScaleCount(a.n, a.k)) * sizeof(float));
  cudaMalloc(&y, size_t(a.m * a.n) * sizeof(bf16));
  cudaMalloc(&workspace, workspace_bytes);
  cublasLtHandle_t lt = nullptr;
  const bool ready = x && w && qx && qw && sx && sw && y && workspace &&
                     cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS &&
                     kernels::cuda::LaunchQuantizeE4M3Blocks128x128<bf16>(
                         w, a.n, a.k, qw, sw, nullptr, nullptr, stream) == cudaSuccess;
  kernels::cuda::Fp8Gemm gemm(lt, workspace, workspace_bytes);
  cublasStatus_t status = ready ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
  bool quantized = true;
  auto quantize = [&] {
    quantized = quantized && kernels::cuda::LaunchQuantizeE4M3Tiles1x128<bf16>(
                                 x, a.m, a.k, qx, sx, stream) == cudaSuccess;
  };
  auto multiply = [&] {
    const cublasStatus_t s =
        gemm.Run<bf16>(a.m, a.n, a.k, {qx, sx, kernels::cuda::Fp8Scaling::kTiles1x128},
                       {qw, sw, kernels::cuda::Fp8Scaling::kBlocks128x128}, false, y, stream);
    if (s != CUBLAS_STATUS_SUCCESS) status = s;
  };
  double gemm_ms = 0, quantize_ms = 0;
  if (ready) {
    quantize_ms = MedianMs(a.reps, stream, quantize);
    gemm_ms = MedianMs(a.reps, stream, multiply);
  }
  for (void* p : {static_cast<void*>(x), static_cast<void*>(w), static_cast<void*>(qx),
                  static_cast<void*>(qw), static_cast<void*>(sx), static_cast<void*>(sw),
                  static_cast<void*>(y), workspace}) {
    cudaFree(p);
  }
  if (lt) cublasLtDestroy(lt);
  if (status != CUBLAS_STATUS_SUCCESS || !quantized || gemm_ms <= 0) {
    std::fprintf(stderr, "gemm-gpu fp8: cuBLASLt status %d%s\n", int(status),
                 quantized ? "" : " (quantize kernel failed)");
    return 1;
  }
  const double flops = 2.0 * double(a.m) * double(a.n) * double(a.k);
  const double bf16_tflops = GemmTflops<bf16>(a, h, stream);
  if (bf16_tflops <= 0) return 1;
  const double tflops = flops / gemm_ms / 1e9;
  nlohmann::json j = {{"bench", "gemm-gpu"},
                      {"precision", "fp8"},
                      {"scaling", "1x128 x 128x128"},
                      {"m", a.m},
                      {"n", a.n},
                      {"k", a.k},
                      {"tflops", tflops},
                      {"quantize_x_ms", quantize_ms},
                      {"tflops_with_quantize", flops / (gemm_ms + quantize_ms) / 1e9},
                      {"bf16_tflops", bf16_tflops},
                      {"speedup_vs_bf16", tflops / bf16_tflops}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

template <typename T>
int MoeLayer(const MoeGpuArgs& a, cublasHandle_t h, cudaStream_t stream) {
  model::MoeShape shape;
  shape.router = {a.experts, a.top_k, 1, 1, false, 1.0};
  shape.d_model = a.d;
  shape.expert_hidden = a.hidden;
  shape.shared_hidden = a.hidden * a.shared;
  shape.seq_aux_alpha = 1e-4;  // as the CPU benchmark
  // fp8: the experts through Fp8Linear, their weights quantized from the bf16 copies at the
  // warm-up forward (in training: once per optimizer step, not timed per micro-batch).
  std::unique_ptr<model::cuda::Fp8Linear> fp8;
  if (a.precision == "fp8") {
    auto f = model::cuda::Fp8Linear::Create(a.tokens,
                                            std::max({a.d, a.hidden, a.hidden * a.shared}), stream);
    if (!f.ok()) {
      std::fprintf(stderr, "moe-layer-gpu: %s\n", f.status().message().c_str());
      return 1;
    }
    fp8 = std::move(f.value());
  }
  auto layer = model::cuda::MoeLayerCuda<T>::Create(shape, a.tokens, stream, h, fp8.get());
  if (!layer.ok()) {
    std::fprintf(stderr, "moe-layer-gpu: %s\n", layer.status().message().c_str());
    return 1;
  }
  const int64_t e = a.experts, d = a.d, hh = a.hidden, hs = shape.shared_hidden;
  const float std = 0.02f;
  model::cuda::MoeLayerWeightsCuda<T> w;
  w.router = Filled<T>(size_t(e * d), std, 3);
  w.gate = Filled<T>(size_t(e * hh * d), std, 4);
  w.up = Filled<T>(size_t(e * hh * d), std, 5);
  w.down = Filled<T>(size_t(e * d * hh), std, 6);
  if (hs > 0) {
    w.shared_gate = Filled<T>(size_t(hs * d), std, 7);
    w.shared_up = Filled<T>(size_t(hs * d), std, 8);
    w.shared_down = Filled<T>(size_t(d * hs), std, 9);
  }
  model::cuda::MoeLayerGradsCuda g;
  auto zeros = [](size_t n) {
    float* p = nullptr;
    if (n > 0 && cudaMalloc(&p, n * sizeof(float)) == cudaSuccess)
      cudaMemset(p, 0, n * sizeof(float));
    return p;
  };
  g.router = zeros(size_t(e * d));
  g.gate = zeros(size_t(e * hh * d));
  g.up = zeros(size_t(e * hh * d));
  g.down = zeros(size_t(e * d * hh));
  g.shared_gate = zeros(size_t(hs * d));
  g.shared_up = zeros(size_t(hs * d));
  g.shared_down = zeros(size_t(d * hs));
  T* x = Filled<T>(size_t(a.tokens * d), 1.0f, 10);
  T* dy = Filled<T>(size_t(a.tokens * d), 1.0f, 11);
  T *y = nullptr, *dx = nullptr;
  cudaMalloc(&y, size_t(a.tokens * d) * sizeof(T));
  cudaMalloc(&dx, size_t(a.tokens * d) * sizeof(T));
  const bool shared_ok = hs == 0 || (w.shared_gate && w.shared_up && w.shared_down &&
                                     g.shared_gate && g.shared_up && g.shared_down);
  if (!w.router || !w.gate || !w.up || !w.down || !g.router || !g.gate || !g.up || !g.down ||
      !shared_ok || !x || !dy || !y || !dx) {
    std::fprintf(stderr, "moe-layer-gpu: out of GPU memory at this shape\n");
    return 1;
  }
  bool ok = true;
  const double ms = MedianMs(a.reps, stream, [&] {
    ok = ok && layer.value()->Forward(x, 1, a.tokens, w, y).ok();
    ok = ok && layer.value()->Backward(dy, x, 1, a.tokens, w, g, 1.0, dx).ok();
  });
  if (!ok) {
    std::fprintf(stderr, "moe-layer-gpu: a forward or backward pass failed\n");
    return 1;
  }
  // GEMM work: 3 matrices per MLP, 2 FLOPs per multiply-add, forward + 2x backward; the router.
  const double t = double(a.tokens), dd = double(d);
  const double flops =
      18.0 * t * dd * (double(a.top_k) * double(hh) + double(hs)) + 6.0 * t * dd * double(e);
  const double tflops = flops / ms / 1e9;
  // Against the bf16 GEMM peak for bf16 and fp8 (the target is stated against bf16's).
  GemmGpuArgs peak_args;
  peak_args.precision = a.precision == "fp8" ? "bf16" : a.precision;
  const double peak = GemmTflops<T>(peak_args, h, stream);
  if (peak <= 0) return 1;
  nlohmann::json j = {{"bench", "moe-layer-gpu"},
                      {"precision", a.precision},
                      {"tokens", a.tokens},
                      {"d_model", d},
                      {"experts", e},
                      {"top_k", a.top_k},
                      {"expert_hidden", hh},
                      {"shared", a.shared},
                      {"median_ms", ms},
                      {"tokens_per_s", t / ms * 1e3},
                      {"tflops", tflops},
                      {"gemm_peak_tflops", peak},
                      {"gemm_peak_precision", peak_args.precision},
                      {"fraction_of_gemm_peak", tflops / peak}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

int RunGemmGpu(const GemmGpuArgs& a) {
  if (!HaveGpu()) return kSkip;
  cublasHandle_t h;
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  cublasCreate(&h);
  cublasSetStream(h, stream);
  if (a.precision == "fp8") {
    const int rc = GemmFp8(a, h, stream);
    cublasDestroy(h);
    cudaStreamDestroy(stream);
    return rc;
  }
  const double tflops = a.precision == "fp32" ? GemmTflops<float>(a, h, stream)
                                              : GemmTflops<__nv_bfloat16>(a, h, stream);
  if (tflops <= 0) return 1;
  nlohmann::json j = {
      {"bench", "gemm-gpu"}, {"precision", a.precision}, {"m", a.m}, {"n", a.n}, {"k", a.k},
      {"tflops", tflops}};
  std::printf("%s\n", j.dump().c_str());
  cublasDestroy(h);
  cudaStreamDestroy(stream);
  return 0;
}

int RunMoeLayerGpu(const MoeGpuArgs& a) {
  if (!HaveGpu()) return kSkip;
  cublasHandle_t h;
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  cublasCreate(&h);
  // fp8 keeps activations in bf16.
  const int rc =
      a.precision == "fp32" ? MoeLayer<float>(a, h, stream) : MoeLayer<__nv_bfloat16>(a, h, stream);
  cublasDestroy(h);
  cudaStreamDestroy(stream);
  return rc;
}

}  // namespace moerun::bench
