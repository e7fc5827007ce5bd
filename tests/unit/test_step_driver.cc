// StepDriver (worker/trainer/step_driver.h) over a scripted StageBackend in a world of one:
// the rules both backends share — which tokens each micro-batch gets, the loss scale, the
// expert counts behind the bias update, norm ownership, the learning rate and clip factor,
// a forward run again before its backward, and evaluation with partial and fixed-size
// batches — checked call by call.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "common/spec_loader.h"
#include "tests/temp_path.h"
#include "worker/comm/solo_communicator.h"
#include "worker/trainer/step_driver.h"
#include "worker/trainer/step_metrics.h"
#include "worker/trainer/trainer.h"

namespace moerun::trainer {
namespace {

constexpr int64_t kExperts = 4;

// Records what the driver asks; computes nothing. Loss of a forward: 1 + its first token /
// 1000 (so each micro-batch's loss is its own); expert e gets (e + 1) tokens per sequence.
class ScriptedStage : public StageBackend {
 public:
  struct ForwardCall {
    int64_t micro, sequences;
    std::vector<int32_t> ids;
  };
  // `keeps_nothing`: every backward needs its forward run again first.
  ScriptedStage(int64_t fixed, bool keeps_nothing, int64_t seq)
      : fixed_(fixed), keeps_nothing_(keeps_nothing), seq_(seq) {}

  StageGroups groups() const override { return {}; }
  int64_t fixed_sequences() const override { return fixed_; }
  Status BeginStep(int64_t in_flight) override {
    in_flight_ = in_flight;
    last_forward_ = -1;
    return Status::OK();
  }
  void BeginEvaluation() override { last_forward_ = -1; }
  size_t BoundaryBytes(int64_t sequences) const override { return size_t(sequences) * 8; }
  Result<void*> InputFor(int64_t, int64_t) override { return static_cast<void*>(buf_); }
  Result<double> Forward(int64_t micro, const int32_t* ids, const int32_t*,
                         int64_t sequences) override {
    forwards.push_back({micro, sequences, std::vector<int32_t>(ids, ids + sequences * seq_)});
    last_forward_ = micro;
    last_loss_ = 1.0 + double(ids[0]) / 1000.0;
    for (int64_t e = 0; e < kExperts; ++e) counts_[e] = (e + 1) * sequences;
    return last_loss_;
  }
  const void* Output() const override { return buf_; }
  double balance_loss() const override { return 0.5; }
  double mtp_loss() const override { return 0.25; }
  Result<GradientPack> EmbeddingGradient() override { return GradientPack{}; }
  int64_t moe_layers() const override { return 1; }
  const int64_t* ExpertCounts(int64_t) const override { return counts_; }
  Result<double> SequenceLossSum(int64_t sequences) const override {
    loss_sums.push_back(sequences);
    return last_loss_ * double(sequences);
  }
  bool NeedsForwardAgain(int64_t) const override { return keeps_nothing_; }
  Result<void*> OutputGradFor(int64_t) override { return static_cast<void*>(buf_); }
  Status Backward(int64_t micro, double dloss) override {
    if (last_forward_ != micro) return Status::Internal("backward without activations");
    backwards.push_back({micro, dloss});
    return Status::OK();
  }
  const void* InputGrad() const override { return buf_; }
  Status UpdateBalanceBias(double gamma, const std::vector<std::vector<int64_t>>& c) override {
    bias_updates.push_back({gamma, c});
    return Status::OK();
  }
  Result<GradientPack> PackGradients(bool) override {
    ++packs;
    return GradientPack{};
  }
  Status UnpackGradients(bool) override { return Status::OK(); }
  Result<double> GradSquareSum(bool dense, bool routed) override {
    norm_owners.push_back({dense, routed});
    return 16.0;  // a norm of 4: clipped by 1/4 with grad_clip 1
  }
  Status ApplyStep(const kernels::cpu::AdamWStep& adam, double clip) override {
    steps.push_back({adam.lr, clip});
    return Status::OK();
  }
  Status SyncHost() override { return Status::OK(); }
  std::string Describe() const override { return "scripted"; }
  void Abort(const std::string&) override {}

  std::vector<ForwardCall> forwards;
  std::vector<std::pair<int64_t, double>> backwards;
  std::vector<std::pair<double, std::vector<std::vector<int64_t>>>> bias_updates;
  std::vector<std::pair<bool, bool>> norm_owners;
  std::vector<std::pair<double, double>> steps;  // lr, clip
  mutable std::vector<int64_t> loss_sums;
  int packs = 0;
  int64_t in_flight_ = 0;

 private:
  int64_t fixed_;
  bool keeps_nothing_;
  int64_t seq_;
  int64_t last_forward_ = -1;
  double last_loss_ = 0;
  int64_t counts_[kExperts] = {};
  char buf_[64] = {};
};

struct Fixture {
  JobSpec spec;
  Topology topo;
  data::Corpus corpus;
  static Fixture Make() {
    auto loaded = LoadJobSpecFile(std::string(MOERUN_SOURCE_DIR) + "/configs/tiny-cpu.yaml", "");
    REQUIRE(loaded.ok());
    JobSpec spec = loaded.spec;
    spec.model.moe.routed_experts = kExperts;
    const std::string dir = testing::FreshTempPath("step_driver", "data", true);
    std::string text;
    for (int i = 0; i < 40000; ++i) text += char('a' + (i * 7 + i / 13) % 26);
    std::ofstream(dir + "/text.txt") << text;
    spec.data.paths = {dir};
    spec.data.exclude = {};
    auto topo = MakeTopology(spec, std::make_unique<comm::SoloCommunicator>());
    REQUIRE(topo.ok());
    auto corpus = data::Corpus::Load(spec.data, spec.model.vocab_size, spec.model.seq_len);
    REQUIRE(corpus.ok());
    return {spec, std::move(topo.value()), std::move(corpus.value())};
  }
};

std::vector<int32_t> TrainTokens(const Fixture& f, int64_t step, int64_t first, int64_t n) {
  const int64_t seq = f.spec.model.seq_len;
  std::vector<int32_t> ids(static_cast<size_t>(n * seq)), targets(ids.size());
  for (int64_t j = 0; j < n; ++j)
    f.corpus.SampleTrain(f.spec.train.seed, step - 1, first + j, ids.data() + j * seq,
                         targets.data() + j * seq);
  return ids;
}

TEST_CASE("step driver: one step of a world of one runs data x micro_batches micro-batches") {
  Fixture f = Fixture::Make();
  auto owned = std::make_unique<ScriptedStage>(0, false, f.spec.model.seq_len);
  ScriptedStage& b = *owned;
  StepDriver driver(f.spec, &f.topo, &f.corpus, std::move(owned));
  const int64_t micro = f.spec.parallel.data * f.spec.parallel.micro_batches;  // 4
  const int64_t seqs = f.spec.train.global_batch / micro;                      // 4
  auto r = driver.Run(3, 300);
  REQUIRE(r.ok());
  // Pipeline 1: each micro-batch's forward, then its backward, scaled by 1 / micro-batches.
  REQUIRE(b.forwards.size() == size_t(micro));
  REQUIRE(b.backwards.size() == size_t(micro));
  double loss = 0;
  for (int64_t m = 0; m < micro; ++m) {
    CHECK(b.forwards[size_t(m)].micro == m);
    CHECK(b.forwards[size_t(m)].sequences == seqs);
    CHECK(b.forwards[size_t(m)].ids == TrainTokens(f, 3, m * seqs, seqs));
    CHECK(b.backwards[size_t(m)] == std::pair<int64_t, double>{m, 1.0 / double(micro)});
    loss += 1.0 + double(b.forwards[size_t(m)].ids[0]) / 1000.0;
  }
  CHECK(r->loss == doctest::Approx(loss / double(micro)));
  CHECK(r->balance_loss == doctest::Approx(0.5));
  CHECK(r->mtp_loss == doctest::Approx(0.25));  // the mean over micro-batches
  // The bias update sees the step's counts over every micro-batch.
  REQUIRE(b.bias_updates.size() == 1);
  CHECK(b.bias_updates[0].first == f.spec.model.moe.balance.bias_update_speed);
  const std::vector<int64_t> step_counts = {micro * seqs, 2 * micro * seqs, 3 * micro * seqs,
                                            4 * micro * seqs};
  CHECK(b.bias_updates[0].second == std::vector<std::vector<int64_t>>{step_counts});
  REQUIRE(r->expert_load.size() == size_t(f.spec.model.moe_layers()));
  CHECK(r->expert_load[0] == step_counts);
  // Replica 0 of the only expert group owns every parameter's share of the norm; groups of
  // one sum nothing.
  CHECK(b.norm_owners == std::vector<std::pair<bool, bool>>{{true, true}});
  CHECK(b.packs == 0);
  CHECK(r->grad_norm == 4.0);
  REQUIRE(b.steps.size() == 1);
  CHECK(b.steps[0].first == LearningRate(f.spec.train.optimizer, 3, 300));
  CHECK(r->lr == b.steps[0].first);
  CHECK(b.steps[0].second == doctest::Approx(1.0 / 4.0).epsilon(1e-6));
}

TEST_CASE("step driver: a forward run again before its backward gets the same tokens, uncounted") {
  Fixture f = Fixture::Make();
  auto plain_owned = std::make_unique<ScriptedStage>(0, false, f.spec.model.seq_len);
  auto again_owned = std::make_unique<ScriptedStage>(0, true, f.spec.model.seq_len);
  ScriptedStage& plain_stage = *plain_owned;
  ScriptedStage& again = *again_owned;
  StepDriver plain(f.spec, &f.topo, &f.corpus, std::move(plain_owned));
  StepDriver twice(f.spec, &f.topo, &f.corpus, std::move(again_owned));
  auto a = plain.Run(1, 10);
  auto b = twice.Run(1, 10);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  const size_t micro = plain_stage.forwards.size();
  REQUIRE(again.forwards.size() == 2 * micro);
  for (size_t m = 0; m < micro; ++m) {
    CHECK(again.forwards[2 * m].micro == int64_t(m));
    CHECK(again.forwards[2 * m + 1].micro == int64_t(m));
    CHECK(again.forwards[2 * m].ids == plain_stage.forwards[m].ids);
    CHECK(again.forwards[2 * m + 1].ids == plain_stage.forwards[m].ids);
  }
  CHECK(again.backwards == plain_stage.backwards);
  CHECK(a->loss == b->loss);
  CHECK(a->balance_loss == b->balance_loss);
  CHECK(a->expert_load == b->expert_load);
  CHECK(again.bias_updates == plain_stage.bias_updates);
}

TEST_CASE("step driver: evaluation counts real windows; fixed-size batches repeat the last") {
  Fixture f = Fixture::Make();
  const int64_t seqs = 4, seq = f.spec.model.seq_len;
  for (int64_t fixed : {int64_t(0), seqs}) {
    auto owned = std::make_unique<ScriptedStage>(fixed, false, seq);
    ScriptedStage& b = *owned;
    StepDriver driver(f.spec, &f.topo, &f.corpus, std::move(owned));
    auto loss = driver.Evaluate(5);  // two batches: 4 windows, then 1
    REQUIRE(loss.ok());
    REQUIRE(b.forwards.size() == 2);
    CHECK(b.forwards[0].sequences == seqs);
    CHECK(b.forwards[1].sequences == (fixed > 0 ? seqs : 1));
    std::vector<int32_t> window(static_cast<size_t>(seq)), targets(window.size());
    f.corpus.ValidationWindow(4, window.data(), targets.data());
    for (int64_t j = 0; j < b.forwards[1].sequences; ++j) {  // window 4, repeated
      const std::vector<int32_t> got(b.forwards[1].ids.begin() + j * seq,
                                     b.forwards[1].ids.begin() + (j + 1) * seq);
      CHECK(got == window);
    }
    CHECK(b.loss_sums == std::vector<int64_t>{4, 1});
    const double l0 = 1.0 + double(b.forwards[0].ids[0]) / 1000.0;
    const double l1 = 1.0 + double(window[0]) / 1000.0;
    CHECK(loss.value() == doctest::Approx((4 * l0 + l1) / 5.0));
  }
}

TEST_CASE("step line: the time split puts point-to-point waits in the bubble, collectives apart") {
  Fixture f = Fixture::Make();
  StepResult r;
  r.loss = 2.5;
  r.expert_load = {{10, 30, 20, 20}, {20, 20, 20, 20}};
  comm::DataPlaneWait start{1.0, 2.0}, now{1.25, 2.5};
  const auto line = StepLine(f.spec, 7, r, 1.0, now.Since(start));
  CHECK(line["step"] == 7);
  CHECK(line["bubble_s"] == 0.25);
  CHECK(line["data_wait_s"] == 0.5);
  CHECK(line["compute_s"] == 0.25);
  CHECK(line["tokens_per_s"] == double(f.spec.train.global_batch * f.spec.model.seq_len));
  CHECK(line["tokens_per_s"] == 2048.0);  // 16 sequences of 128 tokens in one second
  // MoE layers keyed by their global index; max over each layer's own mean (an MTP module's
  // block routes fewer positions than the main layers), averaged over the layers.
  const int64_t first = f.spec.model.dense_layers;
  CHECK(line["expert_load"][std::to_string(first)] == std::vector<int64_t>{10, 30, 20, 20});
  CHECK(line["max_over_mean_load"].get<double>() == doctest::Approx((30.0 / 20 + 20.0 / 20) / 2));
  CHECK_FALSE(line.contains("mtp_loss"));  // only with model.mtp.depth > 0
}

}  // namespace
}  // namespace moerun::trainer
