// Multi-head latent attention on the GPU against the CPU: the kernels in fp32 and bf16 storage
// (interleaved RoPE on strided heads; the attention core forward and backward over 96 tokens,
// so the CPU's 64-row blocks are crossed), then a whole MLA model (tests/configs/mla-mtp.yaml
// without its MTP modules), queries through q_a/q_b and through q_proj: the CPU's loss and
// every gradient, and the loss falling over 40 steps on one GPU. Each check adds a row to the
// table.
#include <doctest/doctest.h>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/mla_attention.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/mla_attention.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/model_fixture.h"
#include "worker/model/cuda/model_cuda.h"
#include "worker/model/model_stage.h"

namespace cpu = moerun::kernels::cpu;
namespace cuda = moerun::kernels::cuda;
using moerun::gpu_testing::AsStored;
using moerun::gpu_testing::CheckOp;
using moerun::gpu_testing::DeviceArray;
using moerun::gpu_testing::FromFloats;
using moerun::gpu_testing::Get;
using moerun::gpu_testing::MaxRelError;
using moerun::gpu_testing::Normal;
using moerun::gpu_testing::PrecisionName;
using moerun::gpu_testing::Record;
using moerun::gpu_testing::TimeMs;
using moerun::gpu_testing::ToFloats;
using moerun::gpu_testing::Tolerance;

namespace {

template <typename T>
void RopeInterleavedOps() {
  // q of 4 heads of nope 32 + rope 16: RoPE on each head's last 16 values.
  const int64_t b = 2, t = 96, h = 4, nope = 32, rope = 16, row = h * (nope + rope);
  auto x = AsStored<T>(Normal(size_t(b * t * row), 41));
  for (bool inverse : {false, true}) {
    std::vector<float> want = x;
    cpu::RopeInterleaved(want.data() + nope, b, t, h, row, nope + rope, rope, 10000.0, inverse);
    DeviceArray<T> d_x(x.size());
    d_x.Upload(FromFloats<T>(x));
    CUDA_OK(cuda::LaunchRopeInterleaved<T>(d_x.ptr + nope, b, t, h, row, nope + rope, rope, 10000.0,
                                           inverse, nullptr));
    CheckOp<T>(inverse ? "interleaved rope backward" : "interleaved rope forward", Get(d_x), want);
  }
}

template <typename T>
void MlaAttentionOps() {
  const int64_t b = 2, t = 96;
  const cpu::MlaDims m{4, 32, 16, 32};
  const cuda::MlaDimsCuda dm{m.heads, m.nope, m.rope, m.v};
  const int64_t n = b * t, dq = m.nope + m.rope, dkv = m.nope + m.v;
  const double scale = 1.0 / std::sqrt(double(dq));
  auto q = AsStored<T>(Normal(size_t(n * m.heads * dq), 42));
  auto kv = AsStored<T>(Normal(size_t(n * m.heads * dkv), 43));
  auto kpe = AsStored<T>(Normal(size_t(n * m.rope), 44));
  std::vector<float> out(size_t(n * m.heads * m.v)), probs(size_t(b * m.heads * t * t));
  cpu::MlaAttentionForward(q.data(), kv.data(), kpe.data(), out.data(), probs.data(), b, t, m,
                           scale);
  DeviceArray<T> d_q(q.size()), d_kv(kv.size()), d_kpe(kpe.size()), d_out(out.size());
  DeviceArray<float> d_probs(probs.size()), d_ds(probs.size());
  d_q.Upload(FromFloats<T>(q));
  d_kv.Upload(FromFloats<T>(kv));
  d_kpe.Upload(FromFloats<T>(kpe));
  const double ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchMlaAttentionForward<T>(d_q.ptr, d_kv.ptr, d_kpe.ptr, d_out.ptr, d_probs.ptr,
                                               b, t, dm, scale, nullptr));
  });
  CheckOp<T>("mla attention forward", Get(d_out), out, ms,
             2.0 * b * m.heads * (t * (t + 1) / 2.0) * double(dq + m.v));
  // The CPU leaves entries above the diagonal unwritten: compare the causal part.
  auto got_probs = d_probs.Download();
  for (int64_t r = 0; r < b * m.heads * t; ++r)
    for (int64_t j = r % t + 1; j < t; ++j) probs[size_t(r * t + j)] = got_probs[size_t(r * t + j)];
  CheckOp<T>("mla attention probs", got_probs, probs);

  auto dout = AsStored<T>(Normal(out.size(), 45));
  std::vector<float> dqv(q.size()), dkvv(kv.size()), dkpe(kpe.size());
  cpu::MlaAttentionBackward(dout.data(), q.data(), kv.data(), kpe.data(), probs.data(), dqv.data(),
                            dkvv.data(), dkpe.data(), b, t, m, scale);
  DeviceArray<T> d_dout(dout.size()), d_dq(q.size()), d_dkv(kv.size()), d_dkpe(kpe.size());
  d_dout.Upload(FromFloats<T>(dout));
  CUDA_OK(cuda::LaunchMlaAttentionBackward<T>(d_dout.ptr, d_q.ptr, d_kv.ptr, d_kpe.ptr, d_probs.ptr,
                                              d_ds.ptr, d_dq.ptr, d_dkv.ptr, d_dkpe.ptr, b, t, dm,
                                              scale, nullptr));
  CheckOp<T>("mla attention backward dq", Get(d_dq), dqv);
  CheckOp<T>("mla attention backward dkv", Get(d_dkv), dkvv);
  CheckOp<T>("mla attention backward dk_pe", Get(d_dkpe), dkpe);
}

}  // namespace

TEST_CASE("MLA: interleaved RoPE and the attention core match the CPU") {
  RopeInterleavedOps<float>();
  RopeInterleavedOps<__nv_bfloat16>();
  MlaAttentionOps<float>();
  MlaAttentionOps<__nv_bfloat16>();
}

namespace {

moerun::ModelSpec MlaModel(int64_t q_lora_rank) {
  moerun::ModelSpec m = moerun::gpu_testing::TestConfig("mla-mtp.yaml").model;
  m.mtp.depth = 0;  // MLA alone here; tests/gpu/test_mtp_cuda.cc adds the MTP modules
  m.q_lora_rank = q_lora_rank;
  return m;
}

}  // namespace

TEST_CASE("the MLA model on the GPU: the CPU's loss and every gradient, q_a/q_b and q_proj") {
  for (int64_t q_lora : {16, 0}) {
    CAPTURE(q_lora);
    moerun::gpu_testing::CpuGpuRun run(MlaModel(q_lora));
    CHECK(std::fabs(run.gpu_loss - run.cpu_loss) <= 1e-4 * std::fabs(run.cpu_loss));
    moerun::gpu_testing::CheckGradients(run.gpu_grads, run.params,
                                        q_lora > 0 ? "MLA model loss + all gradients (q_a/q_b)"
                                                   : "MLA model loss + all gradients (q_proj)");
  }
}

TEST_CASE("1-GPU training of an MLA model: the loss falls, fp32 and bf16") {
  const char* what = "1-GPU MLA training loss ratio";
  moerun::gpu_testing::CheckTrainsOnOneGpu<float>(MlaModel(16), what, "fp32");
  moerun::gpu_testing::CheckTrainsOnOneGpu<__nv_bfloat16>(MlaModel(16), what, "bf16");
}
