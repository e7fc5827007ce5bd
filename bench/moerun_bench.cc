// moerun-bench: measurements printed as one JSON object per line.
//   moerun-bench sgemm [--m M --n N --k K] [--trans-b] [--threads N] [--reps R]
//       This machine's CPU GEMM ceilings side by side, one line each: OpenBLAS's cblas_sgemm,
//       then oneDNN's fp32 and bf16 matmuls (kernels/cpu/dnnl_matmul.h, what moerun's linear
//       layers run), with the instruction set oneDNN uses.
//   moerun-bench allreduce|alltoall --nproc N --bytes B [--transport ipc|tcp] [--reps R]
//       The ZeroMQ data plane between N processes on this machine: algorithm bandwidth
//       (bytes / time) and bus bandwidth (all-reduce: x 2(N-1)/N; all-to-all: x (N-1)/N),
//       the figures NCCL's tests report. B is the per-rank buffer.
//   moerun-bench coordinator --daemons N [--interval-ms I] [--seconds S]
//       A coordinator under N simulated daemons' heartbeats (bench/coordinator_bench.h).
//   moerun-bench recovery [--trials N] [--faults kill,stop,host,host-disk]
//       Fault -> detected -> next completed step on moerun local (bench/recovery_bench.h).
//   moerun-bench goodput [--steps N] [--fault-every-s S]
//       A fault every S s on moerun local: goodput and the final digest (bench/goodput_bench.h).
//   moerun-bench metrics [--steps S] [--layers L] [--experts E] [--ranks R]
//       Per-step reports at DeepSeek-V3's shape through the coordinator's store, retention
//       and Prometheus text (bench/metrics_bench.h).
//   moerun-bench moe-layer --tokens T --d-model D --experts E --top-k K --expert-hidden H
//       --shared S [--threads N] [--reps R] [--precision fp32|bf16|fp8] [--profile]
//       One MoE layer's forward + backward (router, dispatch, experts, combine, shared
//       experts, balance loss) on the CPU kernels; --profile adds seconds per call by
//       operation (kernels/cpu/op_profile.h).
//   moerun-bench mla [--tokens T --seq S --d-model D --heads H --q-lora R --kv-lora R
//       --nope N --rope R --v V] [--threads N] [--reps R]
//       One MLA attention half (bench/mla_bench.h), forward + backward.
//   moerun-bench gemm-gpu | moe-layer-gpu   (builds with CUDA; bench/gpu_bench.h)
// Times are medians of --reps runs after one warm-up run.
#include <cblas.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/bench_timing.h"
#include "bench/coordinator_bench.h"
#ifdef MOERUN_BENCH_GPU
#include "bench/gpu_bench.h"
#endif
#include "bench/goodput_bench.h"
#include "bench/metrics_bench.h"
#include "bench/mla_bench.h"
#include "bench/recovery_bench.h"
#include "common/curve_auth.h"
#include "kernels/cpu/dnnl_matmul.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/op_profile.h"
#include "kernels/cpu/precision.h"
#include "worker/comm/zmq_communicator.h"
#include "worker/model/ffn_block.h"

namespace {

namespace cpu = moerun::kernels::cpu;
namespace model = moerun::model;

using moerun::bench::MedianSeconds;

std::vector<float> Random(size_t n, uint32_t seed, float std) {
  return moerun::bench::RandomNormal(n, seed, std);
}

struct SgemmArgs {
  int64_t m = 2048, n = 2048, k = 2048;
  int threads = 1, reps = 5;
  bool trans_b = false;  // B stored [n, k], as a linear layer's weight in its forward product
};

void RunSgemm(const SgemmArgs& a) {
  cpu::SetBlasThreads(a.threads);
  auto x = Random(size_t(a.m * a.k), 1, 1.0f), w = Random(size_t(a.k * a.n), 2, 1.0f);
  std::vector<float> y(size_t(a.m * a.n));
  const double flops = 2.0 * double(a.m) * double(a.n) * double(a.k);
  const std::string isa = cpu::DnnlKernelInfo();
  const int64_t ldb = a.trans_b ? a.k : a.n;
  auto report = [&](const char* library, const char* precision, double s) {
    nlohmann::json j = {{"bench", "sgemm"},
                        {"library", library},
                        {"precision", precision},
                        {"m", a.m},
                        {"n", a.n},
                        {"k", a.k},
                        {"trans_b", a.trans_b},
                        {"threads", a.threads},
                        {"median_s", s},
                        {"gflops", flops / s / 1e9}};
    if (std::string(library) == "onednn") j["kernels"] = isa;
    std::printf("%s\n", j.dump().c_str());
  };
  report("openblas", "fp32", MedianSeconds(a.reps, [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, a.trans_b ? CblasTrans : CblasNoTrans,
                       blasint(a.m), blasint(a.n), blasint(a.k), 1.0f, x.data(), blasint(a.k),
                       w.data(), blasint(ldb), 0.0f, y.data(), blasint(a.n));
         }));
  report("onednn", "fp32", MedianSeconds(a.reps, [&] {
           cpu::DnnlGemm(cpu::GemmOperands::kF32, false, a.trans_b, a.m, a.n, a.k, 1.0f, x.data(),
                         a.k, w.data(), ldb, 0.0f, y.data(), a.n);
         }));
  if (!cpu::DnnlHasBf16()) return;  // the "kernels" field of the lines above says so
  std::vector<uint16_t> xb(x.size()), wb(w.size());
  cpu::ToBf16Bits(x.data(), xb.data(), int64_t(x.size()));
  cpu::ToBf16Bits(w.data(), wb.data(), int64_t(w.size()));
  report("onednn", "bf16", MedianSeconds(a.reps, [&] {
           cpu::DnnlGemm(cpu::GemmOperands::kBf16, false, a.trans_b, a.m, a.n, a.k, 1.0f, xb.data(),
                         a.k, wb.data(), ldb, 0.0f, y.data(), a.n);
         }));
}

struct MoeArgs {
  int64_t tokens = 4096, d = 512, experts = 16, top_k = 4, hidden = 256, shared = 1;
  int threads = 1, reps = 5;
  std::string precision = "fp32";
  bool profile = false;
};

// Seconds per call of f by operation (kernels/cpu/op_profile.h), over `reps` calls made after
// the timed ones, so the timers never touch the reported median.
template <typename F>
nlohmann::json OpProfile(int reps, F&& f) {
  cpu::ResetOpProfile();
  cpu::SetOpProfiling(true);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  const double total = std::chrono::duration<double>(Clock::now() - start).count() / reps;
  cpu::SetOpProfiling(false);
  nlohmann::json ops = nlohmann::json::object();
  double timed = 0;
  const auto totals = cpu::OpProfileTotals();
  for (size_t i = 0; i < totals.size(); ++i) {
    if (totals[i].calls == 0) continue;
    ops[cpu::OpName(static_cast<cpu::Op>(i))] = totals[i].seconds / reps;
    timed += totals[i].seconds / reps;
  }
  ops["other"] = std::max(0.0, total - timed);
  return ops;
}

model::GemmPrecision ParsePrecision(const std::string& p) {
  if (p == "bf16") return model::GemmPrecision::kBf16;
  if (p == "fp8") return model::GemmPrecision::kFp8;
  return model::GemmPrecision::kFp32;
}

void RunMoeLayer(const MoeArgs& a) {
  cpu::SetBlasThreads(a.threads);
  model::MoeShape shape;
  shape.router = {a.experts, a.top_k, 1, 1, false, 1.0};
  shape.d_model = a.d;
  shape.expert_hidden = a.hidden;
  shape.shared_hidden = a.hidden * a.shared;
  shape.seq_aux_alpha = 1e-4;
  // As ModelStage sets them: experts in the job's precision, the router in bf16 for bf16 and
  // fp8 jobs (DeepSeek-V3 keeps gating out of fp8).
  const model::GemmPrecision p = ParsePrecision(a.precision);
  shape.router_precision = p == model::GemmPrecision::kFp32 ? p : model::GemmPrecision::kBf16;
  const float std = 0.02f;
  auto router = Random(size_t(a.experts * a.d), 3, std);
  std::vector<float> drouter(router.size()), bias(size_t(a.experts), 0.0f);
  struct Mlp {
    std::vector<float> g, u, d, dg, du, dd;
  };
  auto make = [&](int64_t h, uint32_t seed) {
    Mlp m{Random(size_t(h * a.d), seed, std),
          Random(size_t(h * a.d), seed + 1, std),
          Random(size_t(a.d * h), seed + 2, std),
          {},
          {},
          {}};
    m.dg.resize(m.g.size());
    m.du.resize(m.u.size());
    m.dd.resize(m.d.size());
    return m;
  };
  std::vector<Mlp> experts;
  for (int64_t e = 0; e < a.experts; ++e) experts.push_back(make(a.hidden, uint32_t(10 + 3 * e)));
  Mlp shared = make(std::max<int64_t>(1, shape.shared_hidden), 7);
  model::MoeWeights<float> w{router.data(), drouter.data(), bias.data(), {}, {}};
  for (auto& m : experts)
    w.experts.push_back(
        {m.g.data(), m.u.data(), m.d.data(), m.dg.data(), m.du.data(), m.dd.data(), a.hidden, p});
  w.shared = {shared.g.data(),  shared.u.data(),  shared.d.data(),     shared.dg.data(),
              shared.du.data(), shared.dd.data(), shape.shared_hidden, p};
  auto x = Random(size_t(a.tokens * a.d), 4, 1.0f), dy = Random(x.size(), 5, 1.0f);
  std::vector<float> y(x.size()), dx(x.size());
  model::MoeActivations<float> act;
  auto step = [&] {
    // Local experts only: nothing here can fail.
    (void)model::MoeForward(x.data(), 1, a.tokens, shape, w, act, y.data());
    (void)model::MoeBackward(dy.data(), x.data(), 1, a.tokens, shape, w, act, 1.0, dx.data());
  };
  const double s = MedianSeconds(a.reps, step);
  // Forward + backward GEMM work: 3 matrices per MLP, 2 FLOPs per MAC, 3x for fwd + 2 bwd.
  const double t = double(a.tokens), d = double(a.d);
  const double flops =
      18.0 * t * d * (double(a.top_k) * double(a.hidden) + double(shape.shared_hidden)) +
      6.0 * t * d * double(a.experts);
  nlohmann::json j = {{"bench", "moe-layer"},      {"impl", "moerun"},
                      {"tokens", a.tokens},        {"d_model", a.d},
                      {"experts", a.experts},      {"top_k", a.top_k},
                      {"expert_hidden", a.hidden}, {"shared", a.shared},
                      {"threads", a.threads},      {"median_s", s},
                      {"tokens_per_s", t / s},     {"gflops", flops / s / 1e9},
                      {"precision", a.precision},  {"kernels", cpu::DnnlKernelInfo()}};
  if (a.profile) j["profile_s"] = OpProfile(a.reps, step);
  std::printf("%s\n", j.dump().c_str());
}

struct CollectiveArgs {
  std::string op;
  int nproc = 2;
  int64_t bytes = 64 << 20;
  std::string transport = "ipc";
  int reps = 5;
  bool curve = false;  // the data plane as daemon-started trainers run it: CURVE-encrypted
};

void RunCollective(const CollectiveArgs& a) {
  std::vector<std::string> endpoints;
  for (int r = 0; r < a.nproc; ++r) {
    endpoints.push_back(a.transport == "tcp"
                            ? "tcp://127.0.0.1:" + std::to_string(29500 + (getpid() % 2000) * 8 + r)
                            : "ipc://@moerun-bench-" + std::to_string(getpid()) + "-" +
                                  std::to_string(r));
  }
  // One key pair for all ranks, as a generation's daemons hand out.
  std::optional<moerun::comm::DataPlaneKey> key;
  if (a.curve) {
    auto pair = moerun::GenerateCurveKeyPair();
    if (!pair.ok()) {
      std::fprintf(stderr, "%s\n", pair.status().ToString().c_str());
      return;
    }
    key = moerun::comm::DataPlaneKey{pair->public_key, pair->secret_key};
  }
  std::fflush(stdout);
  std::vector<pid_t> pids;
  for (int r = 0; r < a.nproc; ++r) {
    const pid_t pid = fork();
    if (pid != 0) {
      pids.push_back(pid);
      continue;
    }
    auto comm = moerun::comm::ZmqCommunicator::Create(r, endpoints, 120000, key);
    if (!comm.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", r, comm.status().ToString().c_str());
      _exit(1);
    }
    auto& c = *comm.value();
    const size_t n = size_t(a.bytes) / sizeof(float);
    std::vector<float> buf(n, 1.0f), out(n);
    std::vector<size_t> split(size_t(a.nproc), size_t(a.bytes) / size_t(a.nproc));
    moerun::Status st;
    auto once = [&] {
      if (a.op == "allreduce") {
        std::fill(buf.begin(), buf.end(), 1.0f);
        st = c.AllReduceSum(buf.data(), n);
      } else {
        st = c.AllToAllV(buf.data(), split, out.data(), split);
      }
      if (st.ok()) st = c.Barrier();
    };
    const double s = MedianSeconds(a.reps, once);
    if (!st.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", r, st.ToString().c_str());
      _exit(1);
    }
    if (r == 0) {
      const double algbw = double(a.bytes) / s / 1e9;
      const double factor =
          a.op == "allreduce" ? 2.0 * (a.nproc - 1) / a.nproc : double(a.nproc - 1) / a.nproc;
      nlohmann::json j = {
          {"bench", a.op},    {"impl", "moerun-zmq"}, {"transport", a.transport},
          {"curve", a.curve}, {"nproc", a.nproc},     {"bytes", a.bytes},
          {"median_s", s},    {"algbw_gbps", algbw},  {"busbw_gbps", algbw * factor}};
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
    comm.value().reset();
    _exit(0);
  }
  int failed = 0;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  if (failed) std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  // As in moerun's own main: large buffers come from the heap, not one mmap each.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  CLI::App app{"moerun-bench: measurements as JSON lines"};
  app.require_subcommand(1);
  SgemmArgs sg;
  CLI::App* s =
      app.add_subcommand("sgemm", "CPU GEMM ceilings: OpenBLAS sgemm, oneDNN fp32 and bf16");
  s->add_option("--m", sg.m)->capture_default_str();
  s->add_option("--n", sg.n)->capture_default_str();
  s->add_option("--k", sg.k)->capture_default_str();
  s->add_option("--threads", sg.threads)->capture_default_str();
  s->add_option("--reps", sg.reps)->capture_default_str();
  s->add_flag("--trans-b", sg.trans_b, "B stored [n, k], as a linear layer's weight");
  s->callback([&] { RunSgemm(sg); });
  MoeArgs mo;
  CLI::App* m = app.add_subcommand("moe-layer", "one MoE layer, forward + backward");
  m->add_option("--tokens", mo.tokens)->capture_default_str();
  m->add_option("--d-model", mo.d)->capture_default_str();
  m->add_option("--experts", mo.experts)->capture_default_str();
  m->add_option("--top-k", mo.top_k)->capture_default_str();
  m->add_option("--expert-hidden", mo.hidden)->capture_default_str();
  m->add_option("--shared", mo.shared)->capture_default_str();
  m->add_option("--threads", mo.threads)->capture_default_str();
  m->add_option("--reps", mo.reps)->capture_default_str();
  m->add_option("--precision", mo.precision, "the experts' GEMMs (the router: bf16 unless fp32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "fp8"}));
  m->add_flag("--profile", mo.profile, "add seconds per call by operation (profile_s)");
  m->callback([&] { RunMoeLayer(mo); });
  CollectiveArgs co;
  for (const char* op : {"allreduce", "alltoall"}) {
    CLI::App* c = app.add_subcommand(op, std::string("the ZeroMQ data plane's ") + op);
    c->add_option("--nproc", co.nproc)->capture_default_str()->check(CLI::Range(1, 64));
    c->add_option("--bytes", co.bytes, "per-rank buffer")->capture_default_str();
    c->add_option("--transport", co.transport)
        ->capture_default_str()
        ->check(CLI::IsMember({"ipc", "tcp"}));
    c->add_option("--reps", co.reps)->capture_default_str();
    c->add_flag("--curve", co.curve, "CURVE-encrypted sockets, as daemon-started trainers use");
    c->callback([&co, op] {
      co.op = op;
      RunCollective(co);
    });
  }
  moerun::bench::MlaBenchArgs ml;
  CLI::App* mlc = app.add_subcommand("mla", "one MLA attention half, forward + backward");
  moerun::bench::AddMlaBenchOptions(mlc, &ml);
  mlc->callback([&] { moerun::bench::RunMlaBench(ml); });
  moerun::bench::CoordinatorBenchArgs cb;
  int rc = 0;
  CLI::App* cd =
      app.add_subcommand("coordinator", "N simulated daemons heartbeating a coordinator");
  cd->add_option("--daemons", cb.daemons)->capture_default_str()->check(CLI::Range(1, 100000));
  cd->add_option("--interval-ms", cb.interval_ms)->capture_default_str();
  cd->add_option("--seconds", cb.seconds)->capture_default_str();
  cd->callback([&] { rc = moerun::bench::RunCoordinatorBench(cb); });
  moerun::bench::RecoveryBenchArgs rb;
  CLI::App* rv = app.add_subcommand("recovery", "fault -> detection -> next step, on moerun local");
  rv->add_option("--job", rb.job)->capture_default_str();
  rv->add_option("--trials", rb.trials)->capture_default_str();
  rv->add_option("--steps", rb.steps)->capture_default_str();
  rv->add_option("--at-step", rb.at_step)->capture_default_str();
  rv->add_option("--faults", rb.faults, "kill, stop, host (a lost host; a spare), host-disk")
      ->delimiter(',');
  rv->callback([&] { rc = moerun::bench::RunRecoveryBench(rb); });
  moerun::bench::GoodputBenchArgs gb;
  CLI::App* gp = app.add_subcommand(
      "goodput", "a fault every S seconds on moerun local: goodput and the final digest");
  gp->add_option("--job", gb.job)->capture_default_str();
  gp->add_option("--steps", gb.steps)->capture_default_str()->check(CLI::PositiveNumber);
  gp->add_option("--fault-every-s", gb.fault_every_s)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  gp->add_option("--seed", gb.seed)->capture_default_str();
  gp->add_option("--max-restarts", gb.max_restarts)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  gp->callback([&] { rc = moerun::bench::RunGoodputBench(gb); });
  moerun::bench::MetricsBenchArgs mb;
  CLI::App* mt = app.add_subcommand(
      "metrics", "per-step reports at DeepSeek-V3's shape through the coordinator's store");
  mt->add_option("--steps", mb.steps)->capture_default_str()->check(CLI::PositiveNumber);
  mt->add_option("--layers", mb.layers)->capture_default_str()->check(CLI::PositiveNumber);
  mt->add_option("--experts", mb.experts)->capture_default_str()->check(CLI::PositiveNumber);
  mt->add_option("--ranks", mb.ranks)->capture_default_str()->check(CLI::PositiveNumber);
  mt->callback([&] { rc = moerun::bench::RunMetricsBench(mb); });
#ifdef MOERUN_BENCH_GPU
  moerun::bench::GemmGpuArgs gg;
  CLI::App* ggc = app.add_subcommand("gemm-gpu", "cuBLAS GEMM: the GPU's measured peak");
  ggc->add_option("--m", gg.m)->capture_default_str();
  ggc->add_option("--n", gg.n)->capture_default_str();
  ggc->add_option("--k", gg.k)->capture_default_str();
  ggc->add_option("--precision", gg.precision)->check(CLI::IsMember({"bf16", "fp32", "fp8"}));
  ggc->add_option("--reps", gg.reps)->capture_default_str();
  ggc->callback([&] { rc = moerun::bench::RunGemmGpu(gg); });
  moerun::bench::MoeGpuArgs mg;
  CLI::App* mgc =
      app.add_subcommand("moe-layer-gpu", "one MoE layer forward + backward on the GPU");
  mgc->add_option("--tokens", mg.tokens)->capture_default_str();
  mgc->add_option("--d-model", mg.d)->capture_default_str();
  mgc->add_option("--experts", mg.experts)->capture_default_str();
  mgc->add_option("--top-k", mg.top_k)->capture_default_str();
  mgc->add_option("--expert-hidden", mg.hidden)->capture_default_str();
  mgc->add_option("--shared", mg.shared)->capture_default_str();
  mgc->add_option("--precision", mg.precision)->check(CLI::IsMember({"bf16", "fp32", "fp8"}));
  mgc->add_option("--reps", mg.reps)->capture_default_str();
  mgc->callback([&] { rc = moerun::bench::RunMoeLayerGpu(mg); });
#endif
  CLI11_PARSE(app, argc, argv);
  return rc;
}
