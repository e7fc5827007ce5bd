// Training with real processes: determinism, SIGKILL and resume, a corrupt checkpoint,
// eval, export and exit codes. Every run is short and bounded.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <rocksdb/db.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/integration/process.h"
#include "tests/temp_path.h"

namespace fs = std::filesystem;
using moerun::testing::Output;
using moerun::testing::ReadAll;
using moerun::testing::RunMoerun;
using moerun::testing::SpawnMoerun;

namespace {

const std::string kJob = std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml";

std::string RunDir(const std::string& name) {
  return moerun::testing::FreshTempPath("training", name, false);
}

// The loss column of metrics.jsonl, as text: equal text means bitwise-equal doubles.
std::vector<std::string> Losses(const std::string& run_dir) {
  std::vector<std::string> out;
  std::istringstream in(ReadAll(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line)["loss"].dump());
  return out;
}

size_t Lines(const std::string& path) {
  std::string s = ReadAll(path);
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

std::string Digest(const std::string& run_dir) {
  Output d = RunMoerun("checkpoint digest --run-dir " + run_dir);
  REQUIRE_MESSAGE(d.exit_code == 0, d.err);
  return d.out.substr(0, 64);
}

Output Train(const std::string& run_dir, const std::string& extra = "") {
  Output r = RunMoerun("train " + kJob + " --run-dir " + run_dir + " --no-progress " + extra);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r;
}

// Trains `job` for 300 steps whole, and again with a SIGKILL half-way and --resume: the two
// runs' losses and final weights must be the same bits.
void CheckKillAndResume(const std::string& job, const std::string& name) {
  const std::string whole = RunDir(name + "-whole"), killed = RunDir(name + "-killed");
  const std::string steps = "--steps 300";
  auto train = [&](const std::string& dir, const std::string& extra) {
    Output r = RunMoerun("train " + job + " --run-dir " + dir + " --no-progress " + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  };
  train(whole, steps);
  const pid_t pid =
      SpawnMoerun({"train", job, "--run-dir", killed, "--no-progress", "--steps", "300"});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (Lines(killed + "/metrics.jsonl") < 150 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE(kill(pid, SIGKILL) == 0);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  const size_t at_kill = Lines(killed + "/metrics.jsonl");
  INFO("killed after ", at_kill, " steps");
  REQUIRE(at_kill < 300);
  train(killed, steps + " --resume");
  CHECK(ReadAll(killed + "/train.log").find("resumed from checkpoint step") != std::string::npos);
  CHECK(Losses(killed) == Losses(whole));
  CHECK(Digest(killed) == Digest(whole));
  fs::remove_all(whole);
  fs::remove_all(killed);
}

// kJob in another precision, written next to the runs.
std::string JobIn(const std::string& precision) {
  std::string spec = ReadAll(kJob);
  spec.replace(spec.find("  seed: 99\n"), 11, "  seed: 99\n  precision: " + precision + "\n");
  const std::string job = RunDir("job-" + precision) + ".yaml";
  std::ofstream(job) << spec;
  return job;
}

}  // namespace

TEST_CASE("the same job twice: bitwise-identical losses and weights") {
  const std::string a = RunDir("a"), b = RunDir("b");
  Train(a);
  Train(b);
  CHECK(Losses(a).size() == 40);
  CHECK(Losses(a) == Losses(b));
  CHECK(Digest(a) == Digest(b));
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST_CASE("a rank that finishes keeps its memory snapshots: its job may still restart from them") {
  // The last step is committed only once every rank has written it; a rank whose daemon froze
  // before it finished restarts from the memory commit, which needs every rank's snapshot.
  // (The daemon removes them when the coordinator ends the job.)
  const std::string run = RunDir("memory"), memory = run + "-memory";
  Train(run, "--memory-dir " + memory);
  for (int slot = 0; slot < 3; ++slot) {
    CHECK(fs::file_size(memory + "/rank-0.slot-" + std::to_string(slot) + ".mem") > 64);
  }
  fs::remove_all(run);
  fs::remove_all(memory);
}

TEST_CASE(
    "SIGKILL mid-run, then --resume: the same losses and digest as a run that never stopped") {
  CheckKillAndResume(kJob, "fp32");
}

TEST_CASE("bf16 and fp8 (oneDNN bf16 GEMMs): the same bits twice, and across a kill and resume") {
  for (const std::string precision : {"bf16", "fp8"}) {
    CAPTURE(precision);
    const std::string job = JobIn(precision);
    const std::string a = RunDir(precision + "-a"), b = RunDir(precision + "-b");
    for (const auto& dir : {a, b}) {
      Output r = RunMoerun("train " + job + " --run-dir " + dir + " --no-progress");
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
    }
    CHECK(Losses(a).size() == 40);
    CHECK(Losses(a) == Losses(b));
    CHECK(Digest(a) == Digest(b));
    fs::remove_all(a);
    fs::remove_all(b);
    CheckKillAndResume(job, precision);
    fs::remove(job);
  }
}

TEST_CASE("a corrupt newest checkpoint is refused by name and the previous one is used") {
  const std::string run = RunDir("corrupt"), ref = RunDir("ref");
  Train(ref);
  Train(run);
  {
    rocksdb::DB* db = nullptr;
    const std::string shard = run + "/checkpoints/stage-0/dp-0";
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), shard, &db).ok());
    const std::string key = "000000000040/param/model.norm.weight";
    std::string v;
    REQUIRE(db->Get(rocksdb::ReadOptions(), key, &v).ok());
    v[v.size() / 2] ^= 0x01;
    REQUIRE(db->Put(rocksdb::WriteOptions(), key, v).ok());
    delete db;
  }
  Output list = RunMoerun("checkpoint list --run-dir " + run);
  CHECK(list.out.find("refused: checkpoint") != std::string::npos);
  CHECK(list.out.find("step 40, entry param/model.norm.weight: CRC32C mismatch") !=
        std::string::npos);
  Train(run, "--resume");
  const std::string log = ReadAll(run + "/train.log");
  CHECK(log.find("checkpoint step 40 refused") != std::string::npos);
  CHECK(log.find("resumed from checkpoint step 30") != std::string::npos);
  // Retraining steps 31-40 from step 30 reproduces the original weights exactly.
  CHECK(Digest(run) == Digest(ref));
  fs::remove_all(run);
  fs::remove_all(ref);
}

TEST_CASE("eval and export of a trained run") {
  const std::string run = RunDir("export");
  Train(run);
  Output e = RunMoerun("eval --run-dir " + run +
                       " --text /usr/share/games/fortunes/linux --max-windows 16");
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  const double ce = std::stod(e.out.substr(e.out.find("cross-entropy ") + 14));
  CHECK(ce > 0.5);
  CHECK(ce < std::log(256.0));
  CHECK(e.out.find("over 16 windows of 32 tokens") != std::string::npos);

  Output x = RunMoerun("export --run-dir " + run + " --out " + run + "/hf");
  REQUIRE(x.exit_code == 0);
  const std::string st = ReadAll(run + "/hf/model.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, st.data(), 8);
  auto header = nlohmann::json::parse(st.substr(8, n));
  size_t tensors = 0;
  uint64_t end = 0;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    ++tensors;
    CHECK(info["dtype"] == "F32");
    end = std::max<uint64_t>(end, info["data_offsets"][1].get<uint64_t>());
  }
  CHECK(8 + n + end == st.size());
  CHECK(header.contains("model.layers.2.mlp.experts.3.down_proj.weight"));
  CHECK(header["lm_head.weight"]["shape"] == nlohmann::json::array({256, 32}));
  auto cfg = nlohmann::json::parse(ReadAll(run + "/hf/config.json"));
  CHECK(cfg["n_routed_experts"] == 4);
  CHECK(cfg["first_k_dense_replace"] == 1);
  fs::remove_all(run);
}

TEST_CASE("exit codes: bad data 3, bad spec 2, missing run 1") {
  const std::string run = RunDir("codes");
  std::string text = ReadAll(kJob);
  text.replace(text.find("/usr/share/games/fortunes"), 25, "/nonexistent/corpus");
  const std::string job = run + ".yaml";
  std::ofstream(job) << text;
  Output bad_data = RunMoerun("train " + job + " --run-dir " + run + " --no-progress");
  CHECK(bad_data.exit_code == 3);
  CHECK(bad_data.err.find("data: data.paths: /nonexistent/corpus does not exist") !=
        std::string::npos);
  Output bad_spec = RunMoerun("train /nonexistent.yaml --run-dir " + run);
  CHECK(bad_spec.exit_code == 2);
  // A job that asks for GPUs trains on a GPU or is refused with the reason (4: never
  // retried); it is never trained on the CPU instead.
  const std::string cuda_job = run + "-cuda.yaml";
  const std::string gpu_text = [] {
    std::string t = ReadAll(kJob);
    t.replace(t.find("resources:\n"), 11, "resources:\n  backend: cuda\n");
    return t;
  }();
  // No expert parallelism: a layout the GPU step runs.
  std::string cuda_text = gpu_text;
  cuda_text.replace(cuda_text.find("  pipeline: 2\n"), 14, "  pipeline: 1\n");
  cuda_text.replace(cuda_text.find("  expert: 2\n"), 12, "  expert: 1\n");
  cuda_text.replace(cuda_text.find("  devices_per_worker: 2"), 23, "  devices_per_worker: 1");
  std::ofstream(cuda_job) << cuda_text;
  Output cuda = RunMoerun("train " + cuda_job + " --run-dir " + run + "-cuda --no-progress");
  if (cuda.exit_code == 0) {  // a machine with a GPU (tests/gpu covers that path)
    CHECK(ReadAll(run + "-cuda/metrics.jsonl").find("\"step\":40,") != std::string::npos);
  } else {
    CHECK(cuda.exit_code == 4);
    CHECK(cuda.err.find("resources.backend: cuda: ") != std::string::npos);
    const bool no_gpu = cuda.err.find("no usable GPU on this machine") != std::string::npos;
    const bool no_cuda = cuda.err.find("this build has no CUDA") != std::string::npos;
    CHECK((no_gpu || no_cuda));
    CHECK(!fs::exists(run + "-cuda/metrics.jsonl"));
  }
  // Every parallel layout is the GPU step's too: with pipeline 2 and expert 2 the job trains
  // or is refused only for want of a GPU.
  std::ofstream(cuda_job) << gpu_text;
  Output layout =
      RunMoerun("train " + cuda_job + " --run-dir " + run + "-cuda-layout --no-progress");
  if (layout.exit_code != 0) {
    CHECK(layout.exit_code == 4);
    CHECK((layout.err.find("no usable GPU on this machine") != std::string::npos ||
           layout.err.find("this build has no CUDA") != std::string::npos));
  }
  // fp8 on GPUs needs every GEMM size a multiple of 16 (cuBLASLt).
  std::string fp8_text = cuda_text;
  fp8_text.replace(fp8_text.find("  seed: 99\n"), 11, "  seed: 99\n  precision: fp8\n");
  fp8_text.replace(fp8_text.find("expert_hidden: 32"), 17, "expert_hidden: 24");
  std::ofstream(cuda_job) << fp8_text;
  Output fp8 = RunMoerun("train " + cuda_job + " --run-dir " + run + "-cuda8 --no-progress");
  CHECK(fp8.exit_code == 4);
  CHECK((fp8.err.find("fp8 on the GPU needs multiples of 16 (cuBLASLt's fp8 GEMMs), not "
                      "model.moe.expert_hidden 24") != std::string::npos ||
         fp8.err.find("this build has no CUDA") != std::string::npos));
  fs::remove(cuda_job);
  fs::remove_all(run + "-cuda");
  fs::remove_all(run + "-cuda8");
  fs::remove_all(run + "-cuda-layout");
  // A fresh run into a directory that holds another run's checkpoints is refused.
  Train(run);
  Output again = RunMoerun("train " + kJob + " --run-dir " + run + " --no-progress");
  CHECK(again.exit_code == 2);
  CHECK(
      again.err.find("already holds checkpoints up to step 40: continue that run with --resume") !=
      std::string::npos);
  // Another model's checkpoints are refused before anything starts: exit 2 at the job's
  // file:line:column and field, the run's job.yaml left as it was.
  std::string mla_text = ReadAll(kJob);
  mla_text.replace(mla_text.find("  n_heads: 2\n"), 13,
                   "  n_heads: 2\n  attention: mla\n  kv_lora_rank: 8\n  qk_nope_head_dim: 8\n"
                   "  qk_rope_head_dim: 4\n  v_head_dim: 8\n");
  const std::string mla_job = run + "-mla.yaml";
  std::ofstream(mla_job) << mla_text;
  const std::string before = ReadAll(run + "/job.yaml");
  for (const char* how : {"train ", "launch --nproc 4 "}) {
    Output other =
        RunMoerun(std::string(how) + mla_job + " --run-dir " + run + " --resume --no-progress");
    CHECK(other.exit_code == 2);
    CHECK(other.err.find(mla_job + ":10:3: error: model.attention: mla, but the checkpoints in " +
                         run + "/checkpoints are of a model with model.attention: mha") !=
          std::string::npos);
  }
  CHECK(ReadAll(run + "/job.yaml") == before);
  fs::remove(mla_job);
  Output no_run = RunMoerun("checkpoint digest --run-dir /nonexistent/run");
  CHECK(no_run.exit_code == 1);
  CHECK(no_run.err.find("is /nonexistent/run a moerun run directory?") != std::string::npos);
  fs::remove_all(run);
  fs::remove(job);
}
