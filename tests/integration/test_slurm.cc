// moerun under a real Slurm: slurmctld and three slurmd (Debian's 22.05, munge), each in its
// own network namespace (tests/slurm/slurm_cluster.sh). The default job goes through sbatch
// and scripts/slurm/moerun.sbatch to the same weights as `moerun local`; a second run gets
// Slurm's warning (SIGUSR1 to the batch script, as `#SBATCH --signal=B:USR1@120` sends it)
// mid-run, stops after a checkpoint, requeues itself, resumes from that checkpoint and ends
// with the same weights. Needs root and Slurm; otherwise reports itself skipped (77).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/integration/process.h"
#include "tests/temp_path.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 120;

int Sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// The cluster, made once for the process (both cases share it) and removed at exit.
struct Cluster {
  std::string dir, conf, prefix;
  int up = -1;                                        // slurm_cluster.sh's exit code
  std::string Slurm(const std::string& args) const {  // a Slurm command from slurmctld's host
    return ShellOutput("ip netns exec " + prefix + "ctl env SLURM_CONF=" + conf + " " + args +
                       " 2>&1");
  }
  // scontrol's one-line record of a job: "JobId=5 JobName=moerun ... JobState=RUNNING ...".
  std::string Field(const std::string& job, const std::string& name) const {
    const std::string shown = Slurm("scontrol show job -o " + job);
    std::smatch m;
    return std::regex_search(shown, m, std::regex("\\b" + name + "=(\\S*)")) ? m[1].str() : "";
  }
  std::string Submit(const std::string& run_dir, int steps) const {
    const std::string out =
        Slurm("MOERUN_BIN=" + BinDir() + " sbatch --parsable --nodes=3 --chdir=" + dir +
              " --output=" + dir + "/slurm-%j.out " + MOERUN_SOURCE_DIR +
              "/scripts/slurm/moerun.sbatch " + MOERUN_SOURCE_DIR +
              "/configs/tiny-cpu.yaml --steps " + std::to_string(steps) + " --run-dir " + run_dir);
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_search(out, m, std::regex("^(\\d+)")), out);
    return m[1].str();
  }
  // Waits for the job to leave Slurm's queue for good; its final JobState.
  std::string AwaitEnd(const std::string& job, double seconds) const {
    std::string state;
    WaitFor(
        [&] {
          state = Field(job, "JobState");
          return state == "COMPLETED" || state == "FAILED" || state == "CANCELLED" ||
                 state == "TIMEOUT" || state == "NODE_FAIL";
        },
        seconds);
    return state;
  }
};

Cluster& TheCluster() {
  static Cluster c = [] {
    Cluster k;
    k.dir = FreshTempPath("slurm", "cluster", true);
    k.conf = k.dir + "/slurm.conf";
    const std::string out =
        ShellOutput(std::string(MOERUN_SOURCE_DIR) + "/tests/slurm/slurm_cluster.sh up " + k.dir +
                    " 3 10.78.0 2>" + k.dir + "/up.err; echo rc=$?");
    std::smatch m;
    if (std::regex_search(out, m, std::regex("rc=(\\d+)"))) k.up = std::stoi(m[1]);
    if (std::regex_search(out, m, std::regex("MOERUN_SLURM_NS_PREFIX=(\\S+)"))) k.prefix = m[1];
    return k;
  }();
  return c;
}

std::string Digest(const std::string& run_dir) {
  Output d = RunMoerun("checkpoint digest --run-dir " + run_dir);
  REQUIRE_MESSAGE(d.exit_code == 0, d.err);
  return d.out;
}

// Waits until the run has trained `steps` steps (rank 0's metrics.jsonl has a line per step).
bool TrainedSteps(const std::string& run, int64_t steps) {
  return WaitFor(
      [&] {
        std::ifstream in(run + "/metrics.jsonl");
        return std::count(std::istreambuf_iterator<char>(in), {}, '\n') >= steps;
      },
      180);
}

// `moerun local` of the same job: the weights Slurm's runs must reach.
const std::string& ReferenceDigest() {
  static const std::string digest = [] {
    const std::string run = TheCluster().dir + "/reference";
    Output r = RunMoerun("local " + std::string(MOERUN_SOURCE_DIR) +
                         "/configs/tiny-cpu.yaml --no-progress --steps " + std::to_string(kSteps) +
                         " --run-dir " + run);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return Digest(run);
  }();
  return digest;
}

TEST_CASE("the default job through sbatch reaches the weights `moerun local` does") {
  const Cluster& c = TheCluster();
  const std::string run = c.dir + "/run-sbatch";
  const std::string job = c.Submit(run, kSteps);
  const std::string state = c.AwaitEnd(job, 300);
  const std::string out = ReadAll(c.dir + "/slurm-" + job + ".out");
  REQUIRE_MESSAGE(state == "COMPLETED", out);
  CHECK(c.Field(job, "ExitCode") == "0:0");
  CHECK(out.find("3 node(s) x 2 slot(s) for 4 rank(s)") != std::string::npos);
  CHECK(out.find("SUCCEEDED") != std::string::npos);
  // A daemon on every node, the ranks on two of them (the third a spare), each daemon
  // binding its trainers' data plane on its own node's address.
  for (const char* node : {"n1", "n2", "n3"}) {
    CHECK_MESSAGE(fs::exists(run + "/control/worker-" + std::string(node) + "/worker.log"), node);
  }
  CHECK(Digest(run) == ReferenceDigest());
}

TEST_CASE("Slurm's warning mid-run: a checkpoint, a requeue, a resume, the same weights") {
  const Cluster& c = TheCluster();
  const std::string run = c.dir + "/run-preempted";
  const std::string job = c.Submit(run, kSteps);
  REQUIRE(TrainedSteps(run, 30));  // warned once it has trained a while
  c.Slurm("scancel --batch --signal=USR1 " + job);
  const std::string state = c.AwaitEnd(job, 300);
  const std::string out = ReadAll(c.dir + "/slurm-" + job + ".out");
  REQUIRE_MESSAGE(state == "COMPLETED", out);
  CHECK(c.Field(job, "Restarts") == "1");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(out, m, std::regex("checkpoint step (\\d+) committed")), out);
  const std::string stopped_at = m[1];
  CHECK(std::stoi(stopped_at) >= 30);
  CHECK(std::stoi(stopped_at) < kSteps);
  CHECK(out.find("requeueing Slurm job " + job) != std::string::npos);
  CHECK(out.find("(requeued 1 time(s))") != std::string::npos);
  // The requeued run restored that step rather than starting over.
  CHECK(Sh("grep -rqs 'resumed from checkpoint step " + stopped_at + "\\b' " + run +
           "/control/worker-*/logs/") == 0);
  CHECK(Digest(run) == ReferenceDigest());
}

TEST_CASE("a node Slurm takes away mid-run: its ranks move to the spare node, same weights") {
  const Cluster& c = TheCluster();
  const std::string run = c.dir + "/run-node-lost";
  const std::string job = c.Submit(run, kSteps);
  REQUIRE(TrainedSteps(run, 30));
  // A node with ranks that is not the batch host (n1, which runs the coordinator).
  const std::string status =
      c.Slurm(std::string(MOERUN_BIN) + " status --json --coordinator $(cat " + run +
              "/control/coordinator/endpoint) --keys " + run + "/control/keys");
  const nlohmann::json st = nlohmann::json::parse(status, nullptr, false);
  REQUIRE_MESSAGE((st.is_object() && st["jobs"].size() == 1), status);
  std::string lost;
  for (const auto& w : st["jobs"][0]["workers"])
    if (w != "n1" && lost.empty()) lost = w;
  REQUIRE_MESSAGE(!lost.empty(), status);
  c.Slurm("scontrol update NodeName=" + lost + " State=DOWN Reason=moerun-test");
  const std::string state = c.AwaitEnd(job, 300);
  c.Slurm("scontrol update NodeName=" + lost + " State=RESUME");
  const std::string out = ReadAll(c.dir + "/slurm-" + job + ".out");
  REQUIRE_MESSAGE(state == "COMPLETED", out);
  // The restart names the node lost (in the coordinator's log: the phase may pass between two
  // of moerun slurm's polls).
  const std::string log = ReadAll(run + "/control/coordinator/coordinator.log");
  CHECK_MESSAGE(log.find("RECOVERING: worker " + lost + " sent no heartbeat") != std::string::npos,
                log);
  CHECK(out.find("SUCCEEDED") != std::string::npos);
  CHECK(Digest(run) == ReferenceDigest());
  // The nodes are idle again before the next case.
  REQUIRE(WaitFor(
      [&] { return c.Slurm("sinfo -h -N -t idle -o %N").find(lost) != std::string::npos; }, 60));
}

// Last: it drains a node the cases above need.
TEST_CASE("--health-check --drain: an unhealthy node is drained with the reason, then resumed") {
  const Cluster& c = TheCluster();
  const std::string check = BinDir() + "/moerun-worker --health-check --drain --node n3";
  // A floor no machine reaches: unhealthy, drained with the problem as the reason.
  const std::string failed = c.Slurm(check + " --min-gflops 1000000; echo rc=$?");
  CHECK_MESSAGE(failed.find("UNHEALTHY") != std::string::npos, failed);
  CHECK_MESSAGE(failed.find("rc=1") != std::string::npos, failed);
  const std::string node = c.Slurm("scontrol show node -o n3");
  CHECK_MESSAGE(node.find("DRAIN") != std::string::npos, node);
  CHECK_MESSAGE(node.find("Reason=moerun health: gemm:") != std::string::npos, node);
  // Healthy again: the drain this check made is lifted; another reason's is left alone.
  const std::string passed = c.Slurm(check + "; echo rc=$?");
  CHECK_MESSAGE(passed.find("rc=0") != std::string::npos, passed);
  CHECK(c.Slurm("scontrol show node -o n3").find("DRAIN") == std::string::npos);
  c.Slurm("scontrol update NodeName=n3 State=DRAIN Reason=maintenance");
  c.Slurm(check);
  CHECK(c.Slurm("scontrol show node -o n3").find("Reason=maintenance") != std::string::npos);
  c.Slurm("scontrol update NodeName=n3 State=RESUME");
}

}  // namespace
}  // namespace moerun::testing

int main(int argc, char** argv) {
  using moerun::testing::TheCluster;
  const int up = TheCluster().up;
  if (up == 77) {
    std::fprintf(stderr, "skipped: no Slurm or no network namespaces here (%s/up.err)\n",
                 TheCluster().dir.c_str());
    return 77;
  }
  if (up != 0) {
    std::fprintf(stderr, "the test cluster did not come up (exit %d); see %s\n", up,
                 TheCluster().dir.c_str());
    return 1;
  }
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  std::system(
      (std::string(MOERUN_SOURCE_DIR) + "/tests/slurm/slurm_cluster.sh down " + TheCluster().dir)
          .c_str());
  return rc;
}
