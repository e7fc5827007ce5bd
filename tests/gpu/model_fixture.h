// What the GPU model tests share: a cuBLAS handle and a stream, and a fixed batch of random
// tokens whose targets are each sequence's next token.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "common/job_spec.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/model_stage.h"

namespace moerun::gpu_testing {

struct Gpu {
  Gpu() {
    REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  }
  ~Gpu() {
    cudaStreamDestroy(stream);
    cublasDestroy(handle);
  }
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;
  cublasHandle_t handle;
  cudaStream_t stream;
};

// b sequences of m.seq_len tokens drawn with a fixed seed; targets[i] = the token after ids[i].
inline void Batch(const ModelSpec& m, int64_t b, std::vector<int32_t>* ids,
                  std::vector<int32_t>* targets) {
  std::mt19937 rng(77);
  const int64_t s = m.seq_len;
  std::vector<int32_t> stream(size_t(b * (s + 1)));
  for (auto& t : stream) t = int32_t(rng() % uint32_t(m.vocab_size));
  ids->resize(size_t(b * s));
  targets->resize(size_t(b * s));
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < s; ++j) {
      (*ids)[size_t(i * s + j)] = stream[size_t(i * (s + 1) + j)];
      (*targets)[size_t(i * s + j)] = stream[size_t(i * (s + 1) + j + 1)];
    }
}

// A stage's tensors, their values copied from the whole model's.
inline model::Parameters<float> StageParams(const ModelSpec& spec, const model::StageRange& r,
                                            model::Parameters<float>& whole) {
  model::Parameters<float> p(model::StageTensors(spec, r));
  for (const auto& v : p.views())
    std::copy_n(whole.Find(v.info.name), v.info.numel(), p.values().data() + v.offset);
  return p;
}

// `spec`'s whole model from weights of seed 3 on the fixed batch of 4 sequences, once on the
// GPU in fp32 and once on the CPU (ModelStage): both forwards and backwards run, the GPU's
// gradients downloaded.
struct CpuGpuRun {
  explicit CpuGpuRun(const ModelSpec& s) : spec(s), params(ModelTensors(s)) {
    Batch(spec, b, &ids, &targets);
    params.Initialize(3, spec.init_std);
    auto m = model::cuda::ModelCuda<float>::Create(spec, params, b, spec.seq_len, gpu.stream,
                                                   gpu.handle);
    REQUIRE_MESSAGE(m.ok(), m.status().message());
    gpu_model = std::move(m.value());
    stage = std::make_unique<model::ModelStage<float>>(
        spec, model::StageRange{0, spec.n_layers, true, true}, &params);
    auto cpu = stage->Forward(acts, ids.data(), nullptr, targets.data(), b, spec.seq_len, nullptr);
    REQUIRE(cpu.ok());
    cpu_loss = cpu.value();
    REQUIRE(stage->Backward(acts, 1.0, nullptr, nullptr).ok());
    auto g = gpu_model->Forward(ids.data(), targets.data());
    REQUIRE_MESSAGE(g.ok(), g.status().message());
    gpu_loss = g.value();
    REQUIRE(gpu_model->Backward(1.0).ok());
    REQUIRE(gpu_model->Download(nullptr, &gpu_grads).ok());
  }
  const ModelSpec spec;
  const int64_t b = 4;
  std::vector<int32_t> ids, targets;
  model::Parameters<float> params;
  Gpu gpu;
  std::unique_ptr<model::cuda::ModelCuda<float>> gpu_model;
  std::unique_ptr<model::ModelStage<float>> stage;
  model::StageActivations<float> acts;
  double cpu_loss = 0, gpu_loss = 0;
  std::vector<float> gpu_grads;
};

// The GPU's gradients (in Parameters<float> layout) against the CPU's: one table row for all of
// them, and a check per tensor so a failure names it; `bound` is the max relative error.
inline void CheckGradients(const std::vector<float>& got, const model::Parameters<float>& cpu,
                           const std::string& what, double bound = 1e-3) {
  const double err = MaxRelError(got, cpu.grads());
  Record({what, "fp32", err, bound, 0, 0, 0});
  CHECK(err <= bound);
  for (const auto& v : cpu.views()) {
    const float* g = got.data() + v.offset;
    const float* want = cpu.grads().data() + v.offset;
    const double e = MaxRelError(std::vector<float>(g, g + v.info.numel()),
                                 std::vector<float>(want, want + v.info.numel()));
    CHECK_MESSAGE(e <= bound, v.info.name << ": " << e);
  }
}

// Trains `spec`'s whole model on one GPU, 40 steps on a fixed batch of 4 sequences (weights
// from seed 5; AdamW, lr 3e-3, no weight decay, clipping at 1; balancing γ 1e-3), and requires
// the last loss below 0.7 of the first: the table gets `what`'s ratio.
template <typename T>
void CheckTrainsOnOneGpu(const ModelSpec& spec, const std::string& what, const char* precision,
                         bool fp8 = false) {
  const int64_t b = 4;
  std::vector<int32_t> ids, targets;
  Batch(spec, b, &ids, &targets);
  model::Parameters<float> params(ModelTensors(spec));
  params.Initialize(5, spec.init_std);
  Gpu gpu;
  auto m =
      model::cuda::ModelCuda<T>::Create(spec, params, b, spec.seq_len, gpu.stream, gpu.handle, fp8);
  REQUIRE_MESSAGE(m.ok(), m.status().message());
  kernels::cpu::AdamWStep adam;
  adam.lr = 3e-3;
  adam.weight_decay = 0.0;
  double first = 0, last = 0;
  for (int64_t step = 1; step <= 40; ++step) {
    auto loss = m.value()->Forward(ids.data(), targets.data());
    REQUIRE_MESSAGE(loss.ok(), loss.status().message());
    REQUIRE(std::isfinite(loss.value()));
    if (step == 1) first = loss.value();
    last = loss.value();
    REQUIRE(m.value()->Backward(1.0).ok());
    adam.step = step;
    REQUIRE(m.value()->Step(adam, 1.0).ok());
    REQUIRE(m.value()->UpdateBalanceBias(1e-3).ok());
  }
  MESSAGE(what << ", " << precision << ": loss " << first << " -> " << last << " in 40 steps");
  Record({what, precision, last / first, 0.7, 0, 0, 0});
  CHECK(last < 0.7 * first);
}

}  // namespace moerun::gpu_testing
