// moerun eval --run-dir DIR [--step S] --text FILE [--max-windows N] [--json]
// Mean next-token cross-entropy of a checkpoint on a text file's bytes (nats per token,
// balance losses excluded): window k takes tokens [k·T, k·T+T], inputs the first T and
// targets the last T, for every window that fits, at most --max-windows. A model with
// multi-token prediction also gets its modules' mean cross-entropy on the same windows
// (module k scoring positions i < T - k); the main model's figure does not depend on them.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/exit_codes.h"
#include "common/model_tensors.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/run_dir.h"
#include "worker/trainer/evaluate.h"
#include "worker/trainer/train_state.h"

namespace moerun::cli {
namespace {

constexpr int64_t kEvalBatch = 8;

struct EvalArgs {
  std::string run_dir, text;
  std::optional<int64_t> step;
  int64_t max_windows = 64;
  bool json = false;
};

int RunEval(const EvalArgs& a) {
  auto rs = OpenRunStep(a.run_dir, a.step);
  if (!rs.ok()) return Fail("eval", rs.status());
  const ModelSpec& m = rs->run.spec.model;
  if (m.vocab_size < 256)
    return Fail("eval",
                Status::InvalidArgument("--text needs a byte-level model (vocab_size >= 256)"));
  std::ifstream in(a.text, std::ios::binary);
  if (!in) return Fail("eval", Status::InvalidArgument("--text " + a.text + ": cannot open"));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), {});
  const int64_t t = m.seq_len;
  const int64_t windows = std::min<int64_t>(a.max_windows, (int64_t(bytes.size()) - 1) / t);
  if (windows <= 0) {
    return Fail("eval", Status::InvalidArgument(
                            "--text " + a.text + ": " + std::to_string(bytes.size()) +
                            " bytes hold no window of seq_len + 1 = " + std::to_string(t + 1)));
  }
  model::Parameters<float> params(ModelTensors(m));
  int64_t restored = 0;
  Status s = trainer::RestoreState(rs->entries, &params, nullptr, &restored, m);
  if (!s.ok()) return Fail("eval", s);
  model::ModelStage<float> stage(m, {0, m.n_layers, true, true}, &params,
                                 rs->run.spec.train.precision);
  double mtp = 0;
  auto mean = trainer::MeanCrossEntropy(
      stage, windows, t, kEvalBatch,
      [&](int64_t k, int32_t* x, int32_t* y) {
        for (int64_t i = 0; i < t; ++i) {
          x[i] = bytes[size_t(k * t + i)];
          y[i] = bytes[size_t(k * t + i + 1)];
        }
      },
      m.mtp.depth > 0 ? &mtp : nullptr);
  if (!mean.ok()) return Fail("eval", mean.status());
  const double ce = mean.value();
  if (a.json) {
    nlohmann::json j = {
        {"step", restored}, {"mean_cross_entropy", ce}, {"windows", windows}, {"seq_len", t}};
    if (m.mtp.depth > 0) j["mtp_cross_entropy"] = mtp;
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  std::printf(
      "step %lld: mean cross-entropy %.4f nats/token (%.4f bits/byte) over %lld windows of %lld "
      "tokens\n",
      (long long)restored, ce, ce / std::log(2.0), (long long)windows, (long long)t);
  if (m.mtp.depth > 0) {
    std::printf("  multi-token prediction: %.4f nats/token, mean over %lld module(s)\n", mtp,
                (long long)m.mtp.depth);
  }
  return kExitOk;
}

}  // namespace

void AddEvalCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Cross-entropy of a checkpoint on a text file");
  cmd->add_option("--run-dir", a->run_dir, "the run directory")->required();
  cmd->add_option("--step", a->step, "a complete step (default: the newest readable)");
  cmd->add_option("--text", a->text, "text file; its bytes are the tokens")->required();
  cmd->add_option("--max-windows", a->max_windows, "windows evaluated at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", a->json, "one JSON object with the full-precision figures");
  cmd->callback([a, exit_code] { *exit_code = RunEval(*a); });
}

}  // namespace moerun::cli
