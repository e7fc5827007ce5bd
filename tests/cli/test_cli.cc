// The `moerun` binary as users run it: exit codes, messages and JSON output.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Run {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Run Moerun(const std::string& args) {
  const std::string err_path = "/tmp/moerun_cli_test_" + std::to_string(getpid()) + ".err";
  const std::string cmd = std::string(MOERUN_BIN) + " " + args + " 2>" + err_path;
  Run r{};
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = ReadFile(err_path);
  std::remove(err_path.c_str());
  return r;
}

std::string Config(const char* name) { return std::string(MOERUN_SOURCE_DIR) + "/configs/" + name; }

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = "/tmp/moerun_cli_test_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("validate accepts every example config") {
  Run r = Moerun("validate " + Config("tiny-cpu.yaml") + " " + Config("deepseek-v3.yaml") + " " +
                 Config("gpu-8x.yaml") + " " + Config("multi-host-cpu.yaml") + " " +
                 Config("single-gpu.yaml"));
  INFO(r.out, r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("tiny-cpu.yaml: ok (job tiny-cpu, world size 4)") != std::string::npos);
}

TEST_CASE("validate reports file:line:column, field and rule, and exits 2") {
  std::string text = ReadFile(Config("tiny-cpu.yaml"));
  const size_t expert = text.find("expert: 2 ");
  text.replace(expert, 10, "expert: 3 ");
  text.replace(text.find("top_k: 2 "), 9, "top_kk: 2 ");
  const int line = 1 + int(std::count(text.begin(), text.begin() + long(expert), '\n'));
  std::string path = WriteTemp("bad.yaml", text);
  Run r = Moerun("validate " + path);
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(path + ":" + std::to_string(line) +
                   ":3: error: parallel.expert: must divide parallel.data (2), got 3") !=
        std::string::npos);
  CHECK(r.err.find("model.moe.top_kk: unknown key 'top_kk' (did you mean 'top_k'?)") !=
        std::string::npos);
  CHECK(r.err.find("model.moe.top_k: required key is missing") != std::string::npos);
  CHECK(r.out.find("3 errors") != std::string::npos);

  Run j = Moerun("validate --json " + path);
  CHECK(j.exit_code == 2);
  auto report = nlohmann::json::parse(j.out);
  REQUIRE(report.size() == 1);
  CHECK(report[0]["ok"] == false);
  CHECK(report[0]["errors"] == 3);
  bool found = false;
  for (const auto& d : report[0]["diagnostics"]) {
    if (d["field"] == "parallel.expert") found = d["line"] == line && d["column"] == 3;
  }
  CHECK(found);
  std::remove(path.c_str());
}

TEST_CASE("validate of a missing file names it") {
  Run r = Moerun("validate /nonexistent/job.yaml");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("/nonexistent/job.yaml: error: cannot open: no such file") != std::string::npos);
}

TEST_CASE("plan --json on DeepSeek-V3: 671B total within 1%, 37B active within 2%") {
  Run r = Moerun("plan " + Config("deepseek-v3.yaml") + " --json");
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  const double total = j["parameters"]["total"].get<double>();
  const double active = j["parameters"]["active_per_token"].get<double>();
  CHECK(std::fabs(total / 671e9 - 1.0) < 0.01);
  CHECK(std::fabs(active / 37e9 - 1.0) < 0.02);
  CHECK(j["world_size"] == 2048);
  CHECK(j["ranks"].size() == 2048);
  CHECK(j["stages"].size() == 16);
  CHECK(j["ranks"][2047]["stage"] == 15);
  CHECK(j["ranks"][2047]["worker"] == 255);
  CHECK(j["flops"]["per_token"].get<double>() > 6 * (active - 129280.0 * 7168));
}

TEST_CASE("plan estimates GPU-hours: DeepSeek-V3's 2.664M at ~39% MFU of H800 bf16") {
  Run r = Moerun("plan " + Config("deepseek-v3.yaml") +
                 " --json --gpu-peak-tflops 989 --mfu 0.39 --tokens 14.8e12");
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  const double hours = j["run_cost"]["gpu_hours"].get<double>();
  CHECK(hours > 2.3e6);
  CHECK(hours < 3.0e6);
  CHECK(j["run_cost"]["days"].get<double>() == doctest::Approx(hours / 2048 / 24));
}

TEST_CASE("plan's run-cost flags go together") {
  Run r = Moerun("plan " + Config("tiny-cpu.yaml") + " --gpu-peak-tflops 989");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("go together") != std::string::npos);
}

TEST_CASE("plan text lists stages, memory and FLOPs; --ranks lists ranks") {
  Run r = Moerun("plan " + Config("tiny-cpu.yaml"));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("stage 1: ranks 2-3, layers 2-3 + final norm and head") != std::string::npos);
  CHECK(r.out.find("memory per device") != std::string::npos);
  CHECK(r.out.find("FLOPs per step") != std::string::npos);
  Run all = Moerun("plan --ranks " + Config("tiny-cpu.yaml"));
  CHECK(all.out.find("rank  stage") != std::string::npos);
}

TEST_CASE("usage errors exit 2 with a message") {
  Run r = Moerun("plan");
  CHECK(r.exit_code == 2);
  Run u = Moerun("frobnicate");
  CHECK(u.exit_code == 2);
}

TEST_CASE("a valid job the trainers cannot run yet: noted by validate, refused by local at once") {
  Run v = Moerun("validate " + Config("gpu-8x.yaml"));
  INFO(v.err);
  CHECK(v.exit_code == 0);
  CHECK(v.err.find("gpu-8x.yaml: note: valid, but not trainable by this version yet: "
                   "resources.backend: cuda: model.attention: mla is not implemented by the GPU "
                   "trainer yet") != std::string::npos);
  // A cuda job in fp8 with sizes cuBLASLt cannot take: refused before a coordinator or daemon
  // starts.
  std::string text = ReadFile(Config("single-gpu.yaml"));
  const size_t precision = text.find("  precision: bf16\n"),
               hidden = text.find("expert_hidden: 256");
  REQUIRE(precision != std::string::npos);
  REQUIRE(hidden != std::string::npos);
  text.replace(hidden, 18, "expert_hidden: 200");
  text.replace(precision, 18, "  precision: fp8\n");
  const std::string spec = WriteTemp("fp8-gpu.yaml", text);
  const std::string run_dir = "/tmp/moerun_cli_test_" + std::to_string(getpid()) + "_fp8_run";
  Run l = Moerun("local " + spec + " --run-dir " + run_dir);
  INFO(l.err);
  CHECK(l.exit_code == 4);
  CHECK(l.err.find("moerun local: resources.backend: cuda: fp8 on the GPU needs multiples of 16 "
                   "(cuBLASLt's fp8 GEMMs), not model.moe.expert_hidden 200") != std::string::npos);
  CHECK(access(run_dir.c_str(), F_OK) != 0);  // nothing was started or written
  std::remove(spec.c_str());
}

TEST_CASE("moerun slurm outside an allocation, or in one too small, refuses before starting") {
  for (const char* v : {"SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_CPUS_PER_NODE",
                        "SLURM_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE", "SLURMD_NODENAME"})
    unsetenv(v);
  const std::string run_dir = "/tmp/moerun_cli_test_" + std::to_string(getpid()) + "_slurm_run";
  Run outside = Moerun("slurm " + Config("tiny-cpu.yaml") + " --run-dir " + run_dir);
  CHECK(outside.exit_code == 2);
  CHECK(outside.err.find("SLURM_JOB_ID is not set") != std::string::npos);
  CHECK(outside.err.find("moerun local") != std::string::npos);
  setenv("SLURM_JOB_ID", "41", 1);
  setenv("SLURM_JOB_NODELIST", "node[1-2]", 1);
  setenv("SLURM_JOB_CPUS_PER_NODE", "1(x2)", 1);
  Run small = Moerun("slurm " + Config("tiny-cpu.yaml") + " --run-dir " + run_dir);
  INFO(small.err);
  CHECK(small.exit_code == 2);
  CHECK(small.err.find("needs 4 trainer slots; Slurm job 41 has 2 node(s) x 1 slot(s): ask for 4 "
                       "node(s) (#SBATCH --nodes=4)") != std::string::npos);
  setenv("SLURM_JOB_NODELIST", "node[1-2", 1);
  Run broken = Moerun("slurm " + Config("tiny-cpu.yaml") + " --run-dir " + run_dir);
  CHECK(broken.exit_code == 2);
  CHECK(broken.err.find("SLURM_JOB_NODELIST") != std::string::npos);
  CHECK(access(run_dir.c_str(), F_OK) != 0);  // nothing was started or written
  for (const char* v : {"SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_CPUS_PER_NODE"})
    unsetenv(v);
}
