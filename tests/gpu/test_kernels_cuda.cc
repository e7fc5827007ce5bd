// Every CUDA op against its CPU twin on fresh random inputs, in fp32 and bf16 storage:
// attention, embedding, RMSNorm, RoPE, SwiGLU, cross-entropy, the router, dispatch and combine,
// AdamW and the gradient norm, GEMMs and the grouped expert GEMMs. The CPU twin runs in fp32 on the
// same (for bf16: bf16-rounded) inputs; the bound per precision is gpu_test_util.h's.
// Selections and the dispatch plan must match exactly. Each op adds a row to the table.
#include <cublas_v2.h>
#include <doctest/doctest.h>

#include <numeric>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe_dispatch.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/router.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/moe_dispatch.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/router.cuh"
#include "tests/gpu/gpu_test_util.h"

namespace cpu = moerun::kernels::cpu;
namespace cuda = moerun::kernels::cuda;
using moerun::gpu_testing::AsStored;
using moerun::gpu_testing::CheckOp;
using moerun::gpu_testing::DeviceArray;
using moerun::gpu_testing::FromFloats;
using moerun::gpu_testing::Get;
using moerun::gpu_testing::MaxRelError;
using moerun::gpu_testing::Normal;
using moerun::gpu_testing::OpResult;
using moerun::gpu_testing::PrecisionName;
using moerun::gpu_testing::Record;
using moerun::gpu_testing::TimeMs;
using moerun::gpu_testing::ToFloats;
using moerun::gpu_testing::Tolerance;

namespace {

template <typename T>
void ElementwiseOps() {
  const int64_t n = 512, d = 1024, v = 4096;
  // Embedding.
  auto table = AsStored<T>(Normal(size_t(v * d), 1));
  std::vector<int32_t> ids(n);
  std::mt19937 rng(2);
  for (auto& id : ids) id = int32_t(rng() % 64);  // repeats: the backward must add in order
  DeviceArray<T> d_table(table.size()), d_out(size_t(n * d));
  DeviceArray<int32_t> d_ids(ids.size());
  d_table.Upload(FromFloats<T>(table));
  d_ids.Upload(ids);
  std::vector<float> want(size_t(n * d));
  cpu::EmbeddingForward(table.data(), ids.data(), want.data(), n, d);
  const double emb_ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchEmbeddingForward<T>(d_table.ptr, d_ids.ptr, d_out.ptr, n, d, nullptr));
  });
  CheckOp<T>("embedding forward", Get(d_out), want, emb_ms, 2.0 * n * d * sizeof(T));
  auto dout = AsStored<T>(Normal(size_t(n * d), 3));
  std::vector<float> dtable(size_t(v * d), 0.0f);
  cpu::EmbeddingBackward(dout.data(), ids.data(), dtable.data(), n, d);
  DeviceArray<float> d_dtable(dtable.size());
  CUDA_OK(cudaMemset(d_dtable.ptr, 0, dtable.size() * sizeof(float)));
  DeviceArray<T> d_dout(dout.size());
  d_dout.Upload(FromFloats<T>(dout));
  CUDA_OK(cuda::LaunchEmbeddingBackward<T>(d_dout.ptr, d_ids.ptr, d_dtable.ptr, n, d, nullptr));
  CheckOp<T>("embedding backward", d_dtable.Download(), dtable);

  // RMSNorm.
  auto x = AsStored<T>(Normal(size_t(n * d), 4));
  auto w = AsStored<T>(Normal(size_t(d), 5, 0.5f));
  std::vector<float> y(size_t(n * d)), rstd{std::vector<float>(size_t(n))};
  cpu::RmsNormForward(x.data(), w.data(), y.data(), rstd.data(), n, d);
  DeviceArray<T> d_x(x.size()), d_w(w.size()), d_y(y.size()), d_dy(y.size()), d_dx(x.size());
  DeviceArray<float> d_rstd(rstd.size()), d_dw(w.size());
  d_x.Upload(FromFloats<T>(x));
  d_w.Upload(FromFloats<T>(w));
  const double rms_ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchRmsNormForward<T>(d_x.ptr, d_w.ptr, d_y.ptr, d_rstd.ptr, n, d, nullptr));
  });
  CheckOp<T>("rmsnorm forward", Get(d_y), y, rms_ms, 2.0 * n * d * sizeof(T));
  auto dy = AsStored<T>(Normal(size_t(n * d), 6));
  std::vector<float> dx(x.size()), dw(w.size(), 0.0f);
  auto rstd_gpu = d_rstd.Download();
  cpu::RmsNormBackward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), n, d);
  CheckOp<T>("rmsnorm rstd", rstd_gpu, rstd);
  d_dy.Upload(FromFloats<T>(dy));
  CUDA_OK(cudaMemset(d_dw.ptr, 0, w.size() * sizeof(float)));
  CUDA_OK(cuda::LaunchRmsNormBackward<T>(d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, d_dx.ptr, d_dw.ptr,
                                         n, d, nullptr));
  CheckOp<T>("rmsnorm backward dx", Get(d_dx), dx);
  CheckOp<T>("rmsnorm backward dw", d_dw.Download(), dw);

  // RoPE, forward then inverse: [B=4, T=128, H=8, hd=64].
  const int64_t b = 4, t = 128, h = 8, hd = 64;
  auto q = AsStored<T>(Normal(size_t(b * t * h * hd), 7));
  for (bool inverse : {false, true}) {
    std::vector<float> want_q = q;
    cpu::Rope(want_q.data(), b, t, h, hd, 10000.0, inverse);
    DeviceArray<T> d_q(q.size());
    d_q.Upload(FromFloats<T>(q));
    CUDA_OK(cuda::LaunchRope<T>(d_q.ptr, b, t, h, hd, 10000.0, inverse, nullptr));
    CheckOp<T>(inverse ? "rope backward" : "rope forward", Get(d_q), want_q);
  }

  // SwiGLU.
  auto gate = AsStored<T>(Normal(size_t(n * d), 8)), up = AsStored<T>(Normal(size_t(n * d), 9));
  std::vector<float> act(gate.size()), dgate(gate.size()), dup(gate.size());
  cpu::SwiGluForward(gate.data(), up.data(), act.data(), n * d);
  cpu::SwiGluBackward(dy.data(), gate.data(), up.data(), dgate.data(), dup.data(), n * d);
  DeviceArray<T> d_gate(gate.size()), d_up(up.size()), d_act(act.size()), d_dgate(gate.size()),
      d_dup(up.size());
  d_gate.Upload(FromFloats<T>(gate));
  d_up.Upload(FromFloats<T>(up));
  const double swiglu_ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchSwiGluForward<T>(d_gate.ptr, d_up.ptr, d_act.ptr, n * d, nullptr));
  });
  CheckOp<T>("swiglu forward", Get(d_act), act, swiglu_ms, 3.0 * n * d * sizeof(T));
  CUDA_OK(cuda::LaunchSwiGluBackward<T>(d_dy.ptr, d_gate.ptr, d_up.ptr, d_dgate.ptr, d_dup.ptr,
                                        n * d, nullptr));
  CheckOp<T>("swiglu backward dgate", Get(d_dgate), dgate);
  CheckOp<T>("swiglu backward dup", Get(d_dup), dup);

  // Cross-entropy over [n, v] logits.
  auto logits = AsStored<T>(Normal(size_t(n * v), 10, 2.0f));
  std::vector<int32_t> targets(n);
  for (auto& tg : targets) tg = int32_t(rng() % uint32_t(v));
  std::vector<float> dlogits(logits.size());
  const double loss = cpu::CrossEntropy(logits.data(), targets.data(), dlogits.data(), n, v, 1.0);
  DeviceArray<T> d_logits(logits.size()), d_dlogits(logits.size());
  DeviceArray<int32_t> d_targets(targets.size());
  DeviceArray<float> d_row_loss{size_t(n)};
  DeviceArray<double> d_loss(1);
  d_logits.Upload(FromFloats<T>(logits));
  d_targets.Upload(targets);
  const double ce_ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchCrossEntropy<T>(d_logits.ptr, d_targets.ptr, d_dlogits.ptr, d_row_loss.ptr,
                                        d_loss.ptr, n, v, 1.0, nullptr));
  });
  CheckOp<T>("cross-entropy loss", {float(d_loss.Download()[0])}, {float(loss)}, ce_ms,
             2.0 * n * v * sizeof(T));
  CheckOp<T>("cross-entropy dlogits", Get(d_dlogits), dlogits);
}

}  // namespace

TEST_CASE("element-wise ops: CUDA against the CPU twins, fp32 and bf16") {
  ElementwiseOps<float>();
  ElementwiseOps<__nv_bfloat16>();
}

TEST_CASE("router: scores, bias-corrected group-limited top-k and backward match the CPU") {
  const int64_t n = 2048;
  for (bool softmax : {false, true}) {
    cpu::RouterConfig cfg;
    cfg.experts = 64;
    cfg.top_k = 6;
    cfg.n_groups = softmax ? 1 : 8;
    cfg.topk_groups = softmax ? 1 : 3;
    cfg.softmax = softmax;
    cfg.route_scale = 2.5;
    CAPTURE(softmax);
    auto logits = Normal(size_t(n * cfg.experts), 11);
    auto bias = Normal(size_t(cfg.experts), 12, 0.1f);
    std::vector<float> scores(logits.size());
    cpu::RouterScores(logits.data(), scores.data(), n, cfg);
    DeviceArray<float> d_logits(logits.size()), d_scores(scores.size()), d_bias(bias.size());
    d_logits.Upload(logits);
    d_bias.Upload(bias);
    CUDA_OK(cuda::LaunchRouterScores(d_logits.ptr, d_scores.ptr, n, cfg, nullptr));
    CheckOp<float>(softmax ? "router scores softmax" : "router scores sigmoid", d_scores.Download(),
                   scores);
    // Selection from identical scores (the CPU's) must choose identical experts.
    d_scores.Upload(scores);
    std::vector<int32_t> idx(size_t(n * cfg.top_k));
    std::vector<float> gates(idx.size());
    cpu::RouterSelect(scores.data(), bias.data(), idx.data(), gates.data(), n, cfg);
    DeviceArray<int32_t> d_idx(idx.size());
    DeviceArray<float> d_gates(gates.size());
    const double ms = TimeMs([&] {
      CUDA_OK(cuda::LaunchRouterSelect(d_scores.ptr, d_bias.ptr, d_idx.ptr, d_gates.ptr, n, cfg,
                                       nullptr));
    });
    CHECK(d_idx.Download() == idx);
    CheckOp<float>(softmax ? "router select softmax" : "router select grouped", d_gates.Download(),
                   gates, ms);
    auto dgates = Normal(gates.size(), 13);
    std::vector<float> dscores(scores.size(), 0.0f), dlogits(scores.size());
    cpu::RouterGatesBackward(dgates.data(), scores.data(), idx.data(), dscores.data(), n, cfg);
    cpu::RouterScoresBackward(dscores.data(), scores.data(), dlogits.data(), n, cfg);
    DeviceArray<float> d_dgates(dgates.size()), d_dscores(scores.size()), d_dlogits(scores.size());
    d_dgates.Upload(dgates);
    d_idx.Upload(idx);
    CUDA_OK(cudaMemset(d_dscores.ptr, 0, scores.size() * sizeof(float)));
    CUDA_OK(cuda::LaunchRouterGatesBackward(d_dgates.ptr, d_scores.ptr, d_idx.ptr, d_dscores.ptr, n,
                                            cfg, nullptr));
    CheckOp<float>("router gates backward", d_dscores.Download(), dscores);
    d_dscores.Upload(dscores);
    CUDA_OK(cuda::LaunchRouterScoresBackward(d_dscores.ptr, d_scores.ptr, d_dlogits.ptr, n, cfg,
                                             nullptr));
    CheckOp<float>("router scores backward", d_dlogits.Download(), dlogits);
  }
  // The sequence-wise balance loss and its gradient, grouped routing's choices as input.
  {
    cpu::RouterConfig cfg;
    cfg.experts = 64;
    cfg.top_k = 6;
    cfg.n_groups = 8;
    cfg.topk_groups = 3;
    const int64_t b = 4, t = n / b;
    auto logits = Normal(size_t(n * cfg.experts), 31);
    std::vector<float> scores(logits.size());
    cpu::RouterScores(logits.data(), scores.data(), n, cfg);
    std::vector<int32_t> idx(size_t(n * cfg.top_k));
    std::vector<float> gates(idx.size()), dscores(scores.size(), 0.0f);
    cpu::RouterSelect(scores.data(), nullptr, idx.data(), gates.data(), n, cfg);
    const double want =
        cpu::SeqBalanceLoss(scores.data(), idx.data(), b, t, 1e-3, cfg, dscores.data(), 2.0);
    DeviceArray<float> d_scores(scores.size()), d_dscores(scores.size());
    DeviceArray<int32_t> d_idx(idx.size());
    DeviceArray<double> row_sum{size_t(n)}, f{size_t(b * cfg.experts)}, seq{size_t(b)}, loss{1};
    d_scores.Upload(scores);
    d_idx.Upload(idx);
    CUDA_OK(cudaMemset(d_dscores.ptr, 0, scores.size() * sizeof(float)));
    const double ms = TimeMs([&] {
      CUDA_OK(cudaMemset(d_dscores.ptr, 0, scores.size() * sizeof(float)));
      CUDA_OK(cuda::LaunchSeqBalanceLoss(d_scores.ptr, d_idx.ptr, b, t, 1e-3, cfg, d_dscores.ptr,
                                         2.0, loss.ptr, {row_sum.ptr, f.ptr, seq.ptr}, nullptr));
    });
    CheckOp<float>("balance loss", {float(loss.Download()[0])}, {float(want)}, ms);
    CheckOp<float>("balance loss dscores", d_dscores.Download(), dscores);
  }
  cpu::RouterConfig too_many;
  too_many.experts = 64;
  too_many.top_k = cuda::kRouterMaxTopK + 1;
  CHECK(cuda::LaunchRouterSelect(nullptr, nullptr, nullptr, nullptr, 1, too_many, nullptr) ==
        cudaErrorInvalidValue);
}

namespace {

template <typename T>
void DispatchOps() {
  const int64_t n = 1024, k = 4, e = 32, d = 512;
  std::vector<int32_t> idx(size_t(n * k));
  std::mt19937 rng(14);
  for (int64_t t = 0; t < n; ++t) {  // k distinct experts per token, skewed toward low ids
    std::vector<int32_t> all(static_cast<size_t>(e));
    std::iota(all.begin(), all.end(), 0);
    for (int64_t s = 0; s < k; ++s) {
      const size_t pick = std::min<size_t>(rng() % (e - s), rng() % (e - s));
      idx[size_t(t * k + s)] = all[pick];
      all.erase(all.begin() + int64_t(pick));
    }
  }
  const cpu::DispatchPlan plan = cpu::PlanDispatch(idx.data(), n, k, e);
  DeviceArray<int32_t> d_idx(idx.size()), d_row_token(idx.size()), d_row_slot(idx.size());
  DeviceArray<int64_t> d_counts{static_cast<size_t>(e)}, d_offsets{static_cast<size_t>(e + 1)},
      d_slot_row{idx.size()};
  d_idx.Upload(idx);
  cuda::DeviceDispatchPlan dp{
      n, k, e, d_counts.ptr, d_offsets.ptr, d_row_token.ptr, d_row_slot.ptr, d_slot_row.ptr};
  const double plan_ms = TimeMs([&] { CUDA_OK(cuda::LaunchPlanDispatch(d_idx.ptr, dp, nullptr)); });
  CHECK(d_counts.Download() == plan.counts);
  CHECK(d_offsets.Download() == plan.offsets);
  CHECK(d_row_token.Download() == plan.row_token);
  CHECK(d_row_slot.Download() == plan.row_slot);
  CHECK(d_slot_row.Download() == plan.slot_row);
  Record({"dispatch plan (exact)", PrecisionName<T>(), 0, 0, plan_ms, 0, 0});

  auto x = AsStored<T>(Normal(size_t(n * d), 15));
  std::vector<float> buf(size_t(n * k * d));
  cpu::DispatchRows(x.data(), plan, buf.data(), d);
  DeviceArray<T> d_x(x.size()), d_buf(buf.size());
  d_x.Upload(FromFloats<T>(x));
  const double disp_ms =
      TimeMs([&] { CUDA_OK(cuda::LaunchDispatchRows<T>(d_x.ptr, dp, d_buf.ptr, d, nullptr)); });
  CheckOp<T>("dispatch rows", Get(d_buf), buf, disp_ms, 2.0 * n * k * d * sizeof(T));

  auto dbuf = AsStored<T>(Normal(buf.size(), 16));
  std::vector<float> dx(x.size(), 0.0f);
  cpu::DispatchRowsBackward(dbuf.data(), plan, dx.data(), d);
  DeviceArray<T> d_dbuf(dbuf.size()), d_dx(x.size());
  d_dbuf.Upload(FromFloats<T>(dbuf));
  CUDA_OK(cudaMemset(d_dx.ptr, 0, x.size() * sizeof(T)));
  CUDA_OK(cuda::LaunchDispatchRowsBackward<T>(d_dbuf.ptr, dp, d_dx.ptr, d, nullptr));
  CheckOp<T>("dispatch rows backward", Get(d_dx), dx);

  auto gates = Normal(size_t(n * k), 17, 0.3f);
  DeviceArray<float> d_gates(gates.size());
  d_gates.Upload(gates);
  std::vector<float> y(x.size(), 0.0f);
  cpu::Combine(dbuf.data(), gates.data(), plan, y.data(), d);
  DeviceArray<T> d_y(y.size());
  CUDA_OK(cudaMemset(d_y.ptr, 0, y.size() * sizeof(T)));
  CUDA_OK(cuda::LaunchCombine<T>(d_dbuf.ptr, d_gates.ptr, dp, d_y.ptr, d, nullptr));
  CheckOp<T>("combine", Get(d_y), y);

  auto dy = AsStored<T>(Normal(y.size(), 18));
  std::vector<float> dout(buf.size()), dgates(gates.size());
  cpu::CombineBackward(dy.data(), dbuf.data(), gates.data(), plan, dout.data(), dgates.data(), d);
  DeviceArray<T> d_dy(dy.size()), d_dout(dout.size());
  DeviceArray<float> d_dgates(dgates.size());
  d_dy.Upload(FromFloats<T>(dy));
  CUDA_OK(cuda::LaunchCombineBackward<T>(d_dy.ptr, d_dbuf.ptr, d_gates.ptr, dp, d_dout.ptr,
                                         d_dgates.ptr, d, nullptr));
  CheckOp<T>("combine backward dout", Get(d_dout), dout);
  CheckOp<T>("combine backward dgates", d_dgates.Download(), dgates);

  // Expert parallelism's regrouping: a random permutation of the dispatch rows, there and
  // back; copies, so exactly the CPU's.
  std::vector<int32_t> perm(size_t(n * k));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  DeviceArray<int32_t> d_perm(perm.size());
  d_perm.Upload(perm);
  std::vector<float> grouped(buf.size()), back(buf.size());
  cpu::GatherRows(dbuf.data(), perm.data(), grouped.data(), n * k, d);
  cpu::ScatterRows(grouped.data(), perm.data(), back.data(), n * k, d);
  CHECK(back == dbuf);
  DeviceArray<T> d_grouped(buf.size()), d_back(buf.size());
  const double gather_ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchGatherRows<T>(d_dbuf.ptr, d_perm.ptr, d_grouped.ptr, n * k, d, nullptr));
  });
  CUDA_OK(cuda::LaunchScatterRows<T>(d_grouped.ptr, d_perm.ptr, d_back.ptr, n * k, d, nullptr));
  CHECK(Get(d_grouped) == grouped);
  CHECK(Get(d_back) == back);
  Record({"gather/scatter rows (exact)", PrecisionName<T>(), 0, 0, gather_ms,
          2.0 * n * k * d * sizeof(T), 0});
}

template <typename T>
void GemmOps(cublasHandle_t handle) {
  // A dense linear layer, forward and backward.
  const int64_t n = 512, in = 1024, out = 768;
  auto x = AsStored<T>(Normal(size_t(n * in), 19)),
       w = AsStored<T>(Normal(size_t(out * in), 20, 0.05f));
  std::vector<float> y(size_t(n * out));
  cpu::LinearForward(x.data(), w.data(), y.data(), n, in, out);
  DeviceArray<T> d_x(x.size()), d_w(w.size()), d_y(y.size());
  d_x.Upload(FromFloats<T>(x));
  d_w.Upload(FromFloats<T>(w));
  const double ms = TimeMs([&] {
    REQUIRE(cuda::LinearForward<T>(handle, d_x.ptr, d_w.ptr, d_y.ptr, n, in, out) ==
            CUBLAS_STATUS_SUCCESS);
  });
  // cuBLAS may use TF32 for fp32 only when asked; the default math mode keeps full fp32.
  CheckOp<T>("linear forward", Get(d_y), AsStored<T>(y), ms, 0, 2.0 * n * in * out);
  auto dy = AsStored<T>(Normal(y.size(), 21));
  std::vector<float> dx(x.size()), dw(w.size(), 0.0f);
  cpu::LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), n, in, out, false);
  DeviceArray<T> d_dy(dy.size()), d_dx(x.size());
  DeviceArray<float> d_dw(w.size());
  d_dy.Upload(FromFloats<T>(dy));
  CUDA_OK(cudaMemset(d_dw.ptr, 0, w.size() * sizeof(float)));
  REQUIRE(cuda::LinearBackward<T>(handle, d_dy.ptr, d_x.ptr, d_w.ptr, d_dx.ptr, d_dw.ptr, n, in,
                                  out, false) == CUBLAS_STATUS_SUCCESS);
  CheckOp<T>("linear backward dx", Get(d_dx), AsStored<T>(dx));
  CheckOp<T>("linear backward dw", d_dw.Download(), dw);

  // The experts of one layer in one grouped call; one expert gets no rows.
  const int64_t experts = 8, ein = 256, eout = 384;
  const std::vector<int64_t> rows = {40, 0, 7, 120, 33, 1, 64, 90};
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t(0));
  auto ex = AsStored<T>(Normal(size_t(total * ein), 22));
  auto ew = AsStored<T>(Normal(size_t(experts * eout * ein), 23, 0.05f));
  std::vector<float> ey(size_t(total * eout)), edy = AsStored<T>(Normal(size_t(total * eout), 24));
  std::vector<float> edx(size_t(total * ein)), edw(ew.size(), 0.0f);
  int64_t off = 0;
  for (int64_t e = 0; e < experts; ++e) {
    cpu::LinearForward(ex.data() + off * ein, ew.data() + e * eout * ein, ey.data() + off * eout,
                       rows[size_t(e)], ein, eout);
    cpu::LinearBackward(edy.data() + off * eout, ex.data() + off * ein, ew.data() + e * eout * ein,
                        edx.data() + off * ein, edw.data() + e * eout * ein, rows[size_t(e)], ein,
                        eout, false);
    off += rows[size_t(e)];
  }
  DeviceArray<T> d_ex(ex.size()), d_ew(ew.size()), d_ey(ey.size()), d_edy(edy.size()),
      d_edx(edx.size());
  DeviceArray<float> d_edw(edw.size());
  DeviceArray<void*> pointers(size_t(3 * experts));
  d_ex.Upload(FromFloats<T>(ex));
  d_ew.Upload(FromFloats<T>(ew));
  d_edy.Upload(FromFloats<T>(edy));
  CUDA_OK(cudaMemset(d_edw.ptr, 0, edw.size() * sizeof(float)));
  const double gms = TimeMs([&] {
    REQUIRE(cuda::ExpertLinearForward<T>(handle, d_ex.ptr, d_ew.ptr, d_ey.ptr, rows.data(), experts,
                                         ein, eout, pointers.ptr) == CUBLAS_STATUS_SUCCESS);
  });
  CheckOp<T>("expert grouped gemm forward", Get(d_ey), AsStored<T>(ey), gms, 0,
             2.0 * total * ein * eout);
  REQUIRE(cuda::ExpertLinearBackward<T>(handle, d_edy.ptr, d_ex.ptr, d_ew.ptr, d_edx.ptr, d_edw.ptr,
                                        rows.data(), experts, ein, eout,
                                        pointers.ptr) == CUBLAS_STATUS_SUCCESS);
  CheckOp<T>("expert grouped gemm dx", Get(d_edx), AsStored<T>(edx));
  CheckOp<T>("expert grouped gemm dw", d_edw.Download(), edw);
}

}  // namespace

TEST_CASE("dispatch and combine: the plan exactly, rows and gradients within bounds") {
  DispatchOps<float>();
  DispatchOps<__nv_bfloat16>();
}

TEST_CASE("GEMMs and grouped expert GEMMs through cuBLAS match OpenBLAS") {
  cublasHandle_t handle;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  GemmOps<float>(handle);
  GemmOps<__nv_bfloat16>(handle);
  cublasDestroy(handle);
}

TEST_CASE("AdamW, the gradient norm and clipping match the CPU") {
  const int64_t n = 1 << 20;
  auto p = Normal(size_t(n), 25), g = Normal(size_t(n), 26, 0.01f);
  std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  DeviceArray<float> d_p(p.size()), d_g(g.size()), d_m(m.size()), d_v(v.size());
  d_p.Upload(p);
  d_g.Upload(g);
  d_m.Upload(m);
  d_v.Upload(v);
  cpu::AdamWStep s;
  s.lr = 3e-4;
  s.weight_decay = 0.1;
  for (int64_t step = 1; step <= 3; ++step) {
    s.step = step;
    cpu::AdamWUpdate(p.data(), g.data(), m.data(), v.data(), n, s, true);
    CUDA_OK(cuda::LaunchAdamWUpdate(d_p.ptr, d_g.ptr, d_m.ptr, d_v.ptr, n, s, true, nullptr));
  }
  CheckOp<float>("adamw params", d_p.Download(), p);
  CheckOp<float>("adamw first moments", d_m.Download(), m);
  CheckOp<float>("adamw second moments", d_v.Download(), v);
  DeviceArray<double> partial(size_t(cuda::kNormBlocks)), sum(1);
  const double ms =
      TimeMs([&] { CUDA_OK(cuda::LaunchSumOfSquares(d_g.ptr, n, partial.ptr, sum.ptr, nullptr)); });
  const double want = cpu::SumOfSquares(g.data(), n);
  const double got = sum.Download()[0];
  CheckOp<float>("grad sum of squares", {float(got)}, {float(want)}, ms, 4.0 * n);
  // Same inputs, same bits: the reduction order is fixed.
  CUDA_OK(cuda::LaunchSumOfSquares(d_g.ptr, n, partial.ptr, sum.ptr, nullptr));
  CHECK(sum.Download()[0] == got);
  const float factor = float(cpu::ClipFactor(std::sqrt(want), 0.5));
  cpu::ScaleInPlace(g.data(), n, factor);
  CUDA_OK(cuda::LaunchScaleInPlace(d_g.ptr, n, factor, nullptr));
  CheckOp<float>("clip scale", d_g.Download(), g);
}

namespace {

template <typename T>
void AttentionOps() {
  const int64_t b = 2, t = 96, h = 4, dk = 48, dv = 32;
  const double scale = 1.0 / std::sqrt(double(dk));
  auto q = AsStored<T>(Normal(size_t(b * t * h * dk), 27));
  auto k = AsStored<T>(Normal(size_t(b * t * h * dk), 28));
  auto v = AsStored<T>(Normal(size_t(b * t * h * dv), 29));
  std::vector<float> out(size_t(b * t * h * dv)), probs(size_t(b * h * t * t));
  cpu::AttentionForward(q.data(), k.data(), v.data(), out.data(), probs.data(), b, t, h, dk, dv,
                        scale);
  DeviceArray<T> d_q(q.size()), d_k(k.size()), d_v(v.size()), d_out(out.size());
  DeviceArray<float> d_probs(probs.size()), d_ds(probs.size());
  d_q.Upload(FromFloats<T>(q));
  d_k.Upload(FromFloats<T>(k));
  d_v.Upload(FromFloats<T>(v));
  const double ms = TimeMs([&] {
    CUDA_OK(cuda::LaunchAttentionForward<T>(d_q.ptr, d_k.ptr, d_v.ptr, d_out.ptr, d_probs.ptr, b, t,
                                            h, dk, dv, scale, nullptr));
  });
  CheckOp<T>("attention forward", Get(d_out), out, ms, 0,
             2.0 * b * h * (t * (t + 1) / 2.0) * double(dk + dv));
  CheckOp<T>("attention probs", d_probs.Download(), probs);
  auto dout = AsStored<T>(Normal(out.size(), 30));
  std::vector<float> dq(q.size()), dk_(k.size()), dv_(v.size());
  cpu::AttentionBackward(dout.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                         dk_.data(), dv_.data(), b, t, h, dk, dv, scale);
  DeviceArray<T> d_dout(dout.size()), d_dq(q.size()), d_dk(k.size()), d_dv(v.size());
  d_dout.Upload(FromFloats<T>(dout));
  CUDA_OK(cuda::LaunchAttentionBackward<T>(d_dout.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_probs.ptr,
                                           d_ds.ptr, d_dq.ptr, d_dk.ptr, d_dv.ptr, b, t, h, dk, dv,
                                           scale, nullptr));
  CheckOp<T>("attention backward dq", Get(d_dq), dq);
  CheckOp<T>("attention backward dk", Get(d_dk), dk_);
  CheckOp<T>("attention backward dv", Get(d_dv), dv_);
}

}  // namespace

TEST_CASE("causal attention forward and backward match the CPU") {
  AttentionOps<float>();
  AttentionOps<__nv_bfloat16>();
}
