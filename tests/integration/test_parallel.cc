// Parallel training with real processes (`moerun launch`) against the same job in one
// process (`moerun train`): every step's loss and the final weights agree, for each kind of
// parallelism alone and together; a killed rank stops the run with an error; a parallel run
// resumes from its own shards.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/integration/process.h"
#include "tests/temp_path.h"
#include "worker/checkpoint/checkpoint_reader.h"

namespace fs = std::filesystem;
using moerun::testing::Output;
using moerun::testing::ReadAll;
using moerun::testing::RunMoerun;
using moerun::testing::SpawnMoerun;

namespace {

const std::string kJob = std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml";
const std::string kMini = std::string(MOERUN_SOURCE_DIR) + "/configs/deepseek-v3-mini.yaml";

std::string Tmp(const std::string& name) {
  return moerun::testing::FreshTempPath("parallel", name, false);
}

// `base` (train-fast.yaml unless given) with another parallel layout and step count.
std::string Variant(const std::string& name, int pipeline, int data, int expert, int micro,
                    const std::string& schedule, int steps, const std::string& base = kJob) {
  std::string text = ReadAll(base);
  const auto p = text.find("\nparallel:") + 1, t = text.find("\ntrain:") + 1;
  text.replace(p, t - p,
               "parallel:\n  pipeline: " + std::to_string(pipeline) +
                   "\n  data: " + std::to_string(data) + "\n  expert: " + std::to_string(expert) +
                   "\n  micro_batches: " + std::to_string(micro) + "\n  schedule: " + schedule +
                   "\n");
  if (steps > 0) {  // else train.steps stays (the runs pass --steps)
    const auto s = text.find("\n  steps: ") + 1;
    text.replace(s, text.find('\n', s) - s, "  steps: " + std::to_string(steps));
  }
  const auto w = text.find("resources:");
  text = text.substr(0, w) + "resources:\n  workers: " + std::to_string(pipeline * data) +
         "\n  devices_per_worker: 1\n";
  const std::string path = Tmp(name) + ".yaml";
  std::ofstream(path) << text;
  return path;
}

std::vector<double> Losses(const std::string& run) {
  std::vector<double> out;
  std::istringstream in(ReadAll(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return out;
}

std::map<std::string, std::vector<float>> Weights(const std::string& run) {
  auto ckpts = moerun::checkpoint::RunCheckpoints::Open(run + "/checkpoints");
  REQUIRE(ckpts.ok());
  auto step = ckpts->NewestReadableStep(nullptr);
  REQUIRE(step.ok());
  auto entries = ckpts->ReadStep(step.value());
  REQUIRE(entries.ok());
  std::map<std::string, std::vector<float>> w;
  for (const auto& e : entries.value())
    if (e.name.rfind("param/", 0) == 0)
      w[e.name] = std::vector<float>(e.f32(), e.f32() + e.numel());
  return w;
}

// How close a parallel run must stay to one process: every step's loss within `every_step`
// relative (the first five within 1e-5), final weights within 1e-4 per tensor.
struct Parity {
  int steps = 30;
  double every_step = 1e-4;
  std::string base = kJob;  // train-fast.yaml gets train.steps = steps; others keep theirs
};

// The embedding's copy on the last stage (multi-token prediction) is the first stage's, bit
// for bit, in the newest step of the first expert group's shards.
void CheckEmbeddingCopies(const std::string& run, int pipeline) {
  const std::string name = "param/model.embed_tokens.weight";
  std::vector<std::string> copies;
  for (int stage : {0, pipeline - 1}) {
    auto store = moerun::checkpoint::ShardStore::Open(
        run + "/checkpoints/stage-" + std::to_string(stage) + "/dp-0", false);
    REQUIRE(store.ok());
    auto steps = store.value()->CompleteSteps();
    REQUIRE(steps.ok());
    REQUIRE(!steps->empty());
    auto entries = store.value()->ReadStep(steps->back());
    REQUIRE(entries.ok());
    for (const auto& e : entries.value()) {
      if (e.name == name) copies.emplace_back(e.bytes.begin(), e.bytes.end());
    }
  }
  REQUIRE(copies.size() == 2);
  CHECK(copies[0] == copies[1]);
}

void CheckParity(const std::string& name, int pipeline, int data, int expert, int micro,
                 const std::string& schedule, const Parity& want = {}) {
  CAPTURE(name);
  const int steps = want.steps;
  const std::string job = Variant(name, pipeline, data, expert, micro, schedule,
                                  want.base == kJob ? steps : 0, want.base);
  const std::string steps_flag = " --steps " + std::to_string(steps);
  const std::string one = Tmp(name + "_one"), many = Tmp(name + "_many");
  Output a = RunMoerun("train " + job + " --run-dir " + one + " --no-progress" + steps_flag);
  REQUIRE_MESSAGE(a.exit_code == 0, a.err);
  Output b =
      RunMoerun("launch --nproc " + std::to_string(pipeline * data) + " " + job + " --run-dir " +
                many + " --no-progress --data-plane-timeout-ms 20000" + steps_flag);
  REQUIRE_MESSAGE(b.exit_code == 0, b.err);
  const auto la = Losses(one), lb = Losses(many);
  REQUIRE(la.size() == size_t(steps));
  REQUIRE(lb.size() == size_t(steps));
  double worst = 0, worst_first5 = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    const double rel = std::fabs(la[i] - lb[i]) / std::fabs(la[i]);
    worst = std::max(worst, rel);
    if (i < 5) worst_first5 = std::max(worst_first5, rel);
  }
  INFO("worst relative loss difference ", worst, " (first 5 steps: ", worst_first5, ")");
  CHECK(worst < want.every_step);
  CHECK(worst_first5 < 1e-5);
  const auto wa = Weights(one), wb = Weights(many);
  REQUIRE(wa.size() == wb.size());
  double worst_w = 0;
  for (const auto& [k, va] : wa) {
    const auto& vb = wb.at(k);
    REQUIRE(va.size() == vb.size());
    double diff = 0, norm = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      diff += double(va[i] - vb[i]) * double(va[i] - vb[i]);
      norm += double(va[i]) * double(va[i]);
    }
    worst_w = std::max(worst_w, std::sqrt(diff / std::max(norm, 1e-30)));
  }
  INFO("worst per-tensor relative weight difference ", worst_w);
  CHECK(worst_w < 1e-4);
  if (ReadAll(job).find("\n  mtp:\n    depth: 1") != std::string::npos && pipeline > 1)
    CheckEmbeddingCopies(many, pipeline);
  fs::remove_all(one);
  fs::remove_all(many);
  fs::remove(job);
}

// The child of `parent` whose command line has "--rank <rank>", or -1.
pid_t ChildWithRank(pid_t parent, const std::string& rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(ReadAll(e.path().string() + "/stat"));
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != parent) continue;
    const std::string cmd = ReadAll(e.path().string() + "/cmdline");
    if (cmd.find(std::string("--rank\0", 7) + rank + std::string("\0", 1)) != std::string::npos) {
      return pid_t(std::stoi(name));
    }
  }
  return -1;
}

}  // namespace

TEST_CASE("pipeline 2 x data 2 x expert 2 (the default layout) matches one process") {
  CheckParity("default", 2, 2, 2, 2, "1f1b");
}

TEST_CASE("DeepSeek-V3 mini (MLA, MTP) as pipeline 2 x data 2 x expert 2 matches one process") {
  // Every step within 1e-5; the last stage's copy of the embedding stays the first stage's.
  CheckParity("mini", 2, 2, 2, 2, "1f1b", {20, 1e-5, kMini});
}

TEST_CASE("each kind of parallelism alone matches one process") {
  CheckParity("pipeline", 2, 1, 1, 2, "1f1b");
  CheckParity("expert", 1, 2, 2, 2, "1f1b");
  CheckParity("data", 1, 2, 1, 2, "1f1b");
}

TEST_CASE("four micro-batches through two stages, gpipe and 1f1b") {
  CheckParity("gpipe4", 2, 1, 1, 4, "gpipe");
  CheckParity("1f1b4", 2, 1, 1, 4, "1f1b");
}

TEST_CASE("a killed rank ends the parallel run with an error, not a hang") {
  const std::string job = Variant("killed", 2, 2, 2, 2, "1f1b", 3000);
  const std::string run = Tmp("killed_run");
  const pid_t launcher = SpawnMoerun({"launch", "--nproc", "4", job, "--run-dir", run,
                                      "--no-progress", "--data-plane-timeout-ms", "2000"});
  // Wait until training runs, then SIGKILL rank 3 (found by its command line).
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(run + "/metrics.jsonl") || fs::file_size(run + "/metrics.jsonl") == 0) {
    REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const pid_t victim = ChildWithRank(launcher, "3");
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);
  const auto killed_at = std::chrono::steady_clock::now();
  int status = 0;
  waitpid(launcher, &status, 0);
  const auto secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  INFO("the launcher returned ", secs, " s after the kill");
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(secs < 10.0);
  fs::remove_all(run);
  fs::remove(job);
}

TEST_CASE("a parallel run resumes from its shards and ends where an uninterrupted one does") {
  const std::string job = Variant("resume", 2, 2, 2, 2, "1f1b", 40);
  const std::string whole = Tmp("resume_whole"), parts = Tmp("resume_parts");
  Output w = RunMoerun("launch --nproc 4 " + job + " --run-dir " + whole + " --no-progress");
  REQUIRE_MESSAGE(w.exit_code == 0, w.err);
  Output first =
      RunMoerun("launch --nproc 4 " + job + " --run-dir " + parts + " --no-progress --steps 40");
  REQUIRE(first.exit_code == 0);
  // Drop the last checkpoint of every shard by resuming from step 30: delete step 40 first.
  for (const char* shard : {"stage-0/dp-0", "stage-0/dp-1", "stage-1/dp-0", "stage-1/dp-1"}) {
    auto store = moerun::checkpoint::ShardStore::Open(parts + "/checkpoints/" + shard, true);
    REQUIRE(store.ok());
    REQUIRE(store.value()->DeleteStep(40).ok());
  }
  Output again =
      RunMoerun("launch --nproc 4 " + job + " --run-dir " + parts + " --no-progress --resume");
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  CHECK(ReadAll(parts + "/train.log").find("resumed from checkpoint step 30") != std::string::npos);
  Output da = RunMoerun("checkpoint digest --run-dir " + whole),
         db = RunMoerun("checkpoint digest --run-dir " + parts);
  REQUIRE(da.exit_code == 0);
  CHECK(da.out == db.out);
  fs::remove_all(whole);
  fs::remove_all(parts);
  fs::remove(job);
}
