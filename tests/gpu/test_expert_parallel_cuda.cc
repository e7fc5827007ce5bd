// Expert parallelism on the GPU (worker/model/cuda/moe_layer_cuda.h with an expert group):
// two members, each holding half of the routed experts, run in two threads on one GPU and
// exchange rows through the host-staged device communicator over ZeroMQ (the transport ranks
// sharing a GPU use). Each member's output and input gradient match one layer holding every
// expert on the member's own tokens, and each member's expert gradients match that layer's
// gradients of the same experts summed over both members' tokens. fp32 and bf16, with
// balanced routing and with every token routed to member 0's experts (member 0's buffers must
// grow to twice a micro-batch's rows; member 1 computes nothing).
#include <cublas_v2.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>

#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/member_threads.h"
#include "worker/model/cuda/moe_layer_cuda.h"

namespace model = moerun::model;
using moerun::gpu_testing::DeviceArray;
using moerun::gpu_testing::FromFloats;
using moerun::gpu_testing::MaxRelError;
using moerun::gpu_testing::Normal;
using moerun::gpu_testing::PrecisionName;
using moerun::gpu_testing::Record;
using moerun::gpu_testing::ToFloats;

namespace {

constexpr int64_t kB = 2, kS = 32, kN = kB * kS, kD = 64, kE = 8, kK = 2, kH = 32, kHs = 48;
constexpr int kMembers = 2;
constexpr int64_t kLocal = kE / kMembers;

model::MoeShape Shape() {
  model::MoeShape shape;
  shape.router = {kE, kK, 1, 1, false, 1.0};
  shape.d_model = kD;
  shape.expert_hidden = kH;
  shape.shared_hidden = kHs;
  shape.seq_aux_alpha = 1e-3;
  return shape;
}

// Host copies of one layer's weights (all experts) and of each member's tokens.
struct Inputs {
  explicit Inputs(bool skewed) {
    if (skewed)  // member 0's experts win every token's top-k
      for (int64_t e = 0; e < kLocal; ++e) bias[size_t(e)] = 10.0f;
  }
  std::vector<float> router = Normal(size_t(kE * kD), 60, 0.1f),
                     bias = Normal(size_t(kE), 61, 0.01f),
                     gate = Normal(size_t(kE * kH * kD), 62, 0.1f),
                     up = Normal(size_t(kE * kH * kD), 63, 0.1f),
                     down = Normal(size_t(kE * kD * kH), 64, 0.1f),
                     sgate = Normal(size_t(kHs * kD), 65, 0.1f),
                     sup = Normal(size_t(kHs * kD), 66, 0.1f),
                     sdown = Normal(size_t(kD * kHs), 67, 0.1f);
  std::vector<float> x[kMembers] = {Normal(size_t(kN * kD), 68), Normal(size_t(kN* kD), 69)};
  std::vector<float> dy[kMembers] = {Normal(size_t(kN * kD), 70), Normal(size_t(kN* kD), 71)};
};

// What one layer (or member) computed: outputs and gradients, back on the host.
struct Results {
  std::vector<float> y[kMembers], dx[kMembers];
  std::vector<float> gate, up, down;  // expert gradients (the experts the layer holds)
};

template <typename T>
struct DeviceLayer {
  // Weights of experts [first, first + count) and the rest of the layer.
  DeviceLayer(const Inputs& in, int64_t first, int64_t count)
      : router(in.router.size()),
        bias(in.bias.size()),
        gate(size_t(count * kH * kD)),
        up(size_t(count * kH * kD)),
        down(size_t(count * kD * kH)),
        sgate(in.sgate.size()),
        sup(in.sup.size()),
        sdown(in.sdown.size()),
        g_router(in.router.size()),
        g_gate(gate.n),
        g_up(up.n),
        g_down(down.n),
        g_sgate(sgate.n),
        g_sup(sup.n),
        g_sdown(sdown.n),
        x(size_t(kN * kD)),
        dy(x.n),
        y(x.n),
        dx(x.n) {
    auto part = [&](const std::vector<float>& v, int64_t per) {
      return FromFloats<T>(
          std::vector<float>(v.begin() + first * per, v.begin() + (first + count) * per));
    };
    router.Upload(FromFloats<T>(in.router));
    bias.Upload(in.bias);
    gate.Upload(part(in.gate, kH * kD));
    up.Upload(part(in.up, kH * kD));
    down.Upload(part(in.down, kD * kH));
    sgate.Upload(FromFloats<T>(in.sgate));
    sup.Upload(FromFloats<T>(in.sup));
    sdown.Upload(FromFloats<T>(in.sdown));
    for (auto* g : {&g_router, &g_gate, &g_up, &g_down, &g_sgate, &g_sup, &g_sdown})
      cudaMemset(g->ptr, 0, g->n * sizeof(float));
  }
  model::cuda::MoeLayerWeightsCuda<T> Weights() const {
    return {router.ptr, bias.ptr, gate.ptr, up.ptr, down.ptr, sgate.ptr, sup.ptr, sdown.ptr};
  }
  model::cuda::MoeLayerGradsCuda Grads() const {
    return {g_router.ptr, g_gate.ptr, g_up.ptr, g_down.ptr, g_sgate.ptr, g_sup.ptr, g_sdown.ptr};
  }
  // One member's tokens forward and backward; y and dx into `r`.
  std::string Run(model::cuda::MoeLayerCuda<T>& layer, const Inputs& in, int member, Results* r) {
    x.Upload(FromFloats<T>(in.x[member]));
    dy.Upload(FromFloats<T>(in.dy[member]));
    moerun::Status st = layer.Forward(x.ptr, kB, kS, Weights(), y.ptr);
    if (st.ok()) st = layer.Backward(dy.ptr, x.ptr, kB, kS, Weights(), Grads(), 1.0, dx.ptr);
    if (!st.ok()) return st.ToString();
    r->y[member] = ToFloats(y.Download());
    r->dx[member] = ToFloats(dx.Download());
    return "";
  }
  void TakeGrads(Results* r) const {
    r->gate = g_gate.Download();
    r->up = g_up.Download();
    r->down = g_down.Download();
  }
  DeviceArray<T> router;
  DeviceArray<float> bias;
  DeviceArray<T> gate, up, down, sgate, sup, sdown;
  DeviceArray<float> g_router, g_gate, g_up, g_down, g_sgate, g_sup, g_sdown;
  DeviceArray<T> x, dy, y, dx;
};

struct StreamAndHandle {
  StreamAndHandle() {
    cudaStreamCreate(&stream);
    cublasCreate(&handle);
  }
  ~StreamAndHandle() {
    cublasDestroy(handle);
    cudaStreamDestroy(stream);
  }
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
};

template <typename T>
void ExpertParallelMatchesOneLayer(bool skewed) {
  const Inputs in(skewed);
  // Reference: every expert in one layer, member 0's tokens then member 1's.
  Results ref;
  {
    StreamAndHandle sh;
    DeviceLayer<T> all(in, 0, kE);
    auto layer = model::cuda::MoeLayerCuda<T>::Create(Shape(), kN, sh.stream, sh.handle);
    REQUIRE_MESSAGE(layer.ok(), layer.status().message());
    for (int m = 0; m < kMembers; ++m) REQUIRE(all.Run(*layer.value(), in, m, &ref) == "");
    all.TakeGrads(&ref);
  }
  // Two members, one thread each, on the same GPU.
  Results got[kMembers];
  const auto errors = moerun::gpu_testing::RunMembers(
      kMembers, std::string("ep-") + PrecisionName<T>() + (skewed ? "-skewed" : ""),
      [&](int m, moerun::comm::Communicator& group) -> std::string {
        StreamAndHandle sh;
        DeviceLayer<T> mine(in, m * kLocal, kLocal);
        auto layer = model::cuda::MoeLayerCuda<T>::Create(Shape(), kN, sh.stream, sh.handle,
                                                          nullptr, {&group, kLocal});
        if (!layer.ok()) return layer.status().ToString();
        const std::string err = mine.Run(*layer.value(), in, m, &got[m]);
        if (err.empty()) mine.TakeGrads(&got[m]);
        return err;
      });
  for (int m = 0; m < kMembers; ++m)
    REQUIRE_MESSAGE(errors[size_t(m)].empty(), "member " << m << ": " << errors[size_t(m)]);
  const double bound = std::is_same_v<T, float> ? 1e-5 : 2e-2;
  double worst = 0;
  for (int m = 0; m < kMembers; ++m) {
    worst =
        std::max({worst, MaxRelError(got[m].y[m], ref.y[m]), MaxRelError(got[m].dx[m], ref.dx[m])});
    auto slice = [&](const std::vector<float>& all, int64_t per) {
      return std::vector<float>(all.begin() + m * kLocal * per,
                                all.begin() + (m + 1) * kLocal * per);
    };
    worst = std::max({worst, MaxRelError(got[m].gate, slice(ref.gate, kH * kD)),
                      MaxRelError(got[m].up, slice(ref.up, kH * kD)),
                      MaxRelError(got[m].down, slice(ref.down, kD * kH))});
  }
  if (skewed) {  // member 1's experts got nothing: their gradients stay zero
    CHECK(*std::max_element(got[1].gate.begin(), got[1].gate.end()) == 0.0f);
    CHECK(*std::min_element(got[1].gate.begin(), got[1].gate.end()) == 0.0f);
  }
  Record({std::string("expert parallel 2 members vs one layer") + (skewed ? ", skewed" : ""),
          PrecisionName<T>(), worst, bound, 0, 0, 0});
  CHECK(worst <= bound);
}

}  // namespace

TEST_CASE("expert parallelism on one GPU: two members match one layer with every expert") {
  for (bool skewed : {false, true}) {
    ExpertParallelMatchesOneLayer<float>(skewed);
    ExpertParallelMatchesOneLayer<__nv_bfloat16>(skewed);
  }
}
