// moerun-worker --health-check [--json] [--drain] [--min-gflops G] [--expect-gpus N] ...
// The node self-test (node_health.h) as a command: prints the report, exits 0 when healthy and
// 1 when not. With --drain (what Slurm's HealthCheckProgram should run, through
// scripts/moerun-health-check) an unhealthy node is drained in Slurm with the problems as the
// reason ("moerun health: ..."), and a healthy node that this check drained before is resumed;
// a node drained for any other reason is left alone.
#include "worker/health/health_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <regex>

#include "common/exit_codes.h"
#include "common/subprocess.h"
#include "worker/health/node_health.h"

namespace moerun::worker {
namespace {

constexpr const char* kDrainPrefix = "moerun health: ";

// Single quotes for sh.
std::string Quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string NodeName(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* n = std::getenv("SLURMD_NODENAME"); n && *n) return n;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::string h = host;
  return h.substr(0, h.find('.'));
}

// Drains an unhealthy node, resumes one this check drained that is healthy now; 0 on success.
int UpdateSlurm(const std::string& scontrol, const std::string& node, const HealthReport& r) {
  const std::string update = scontrol + " update NodeName=" + Quoted(node);
  if (!r.healthy) {
    std::string reason = kDrainPrefix;
    for (size_t i = 0; i < r.problems.size(); ++i) reason += (i ? "; " : "") + r.problems[i];
    auto drained = CommandOutput(update + " State=DRAIN Reason=" + Quoted(reason.substr(0, 200)));
    if (!drained.ok()) {
      std::fprintf(stderr, "moerun-worker: cannot drain %s: %s\n", node.c_str(),
                   drained.status().message().c_str());
      return 1;
    }
    std::fprintf(stderr, "moerun-worker: drained %s: %s\n", node.c_str(), reason.c_str());
    return 0;
  }
  auto shown = CommandOutput(scontrol + " show node -o " + Quoted(node));
  if (!shown.ok()) return 0;  // no Slurm here to tell: nothing to resume
  std::smatch m;
  const bool drained = std::regex_search(*shown, std::regex("State=\\S*DRAIN"));
  const bool ours = std::regex_search(*shown, m, std::regex("Reason=(.*?)( \\[|$)")) &&
                    m[1].str().rfind(kDrainPrefix, 0) == 0;
  if (!drained || !ours) return 0;
  auto resumed = CommandOutput(update + " State=RESUME");
  if (!resumed.ok()) {
    std::fprintf(stderr, "moerun-worker: cannot resume %s: %s\n", node.c_str(),
                 resumed.status().message().c_str());
    return 1;
  }
  std::fprintf(stderr, "moerun-worker: resumed %s (healthy again)\n", node.c_str());
  return 0;
}

}  // namespace

int RunHealthCheck(int argc, char** argv) {
  CLI::App app{"moerun-worker --health-check: a node self-test (GEMM, data plane, GPUs)"};
  HealthCheckOptions o;
  bool json = false, drain = false, unused = false;
  std::string node, scontrol = "scontrol";
  app.add_flag("--health-check", unused, "run the node self-test and exit");
  app.add_flag("--json", json, "print the report as one JSON line");
  app.add_flag("--drain", drain,
               "drain this node in Slurm when unhealthy (and resume it when this check had "
               "drained it and it is healthy again)");
  app.add_option("--node", node, "the node's Slurm name [SLURMD_NODENAME, else the host name]");
  app.add_option("--scontrol", scontrol, "the scontrol program [scontrol]");
  app.add_option("--min-gflops", o.min_gemm_gflops, "GEMM speed floor, fp32 GFLOP/s")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", o.threads, "GEMM threads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--gemm-n", o.gemm_n, "GEMM size (n x n x n)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(16), int64_t(8192)));
  app.add_option("--data-host", o.data_host, "address the data-plane test binds on")
      ->capture_default_str();
  app.add_option("--expect-gpus", o.expect_gpus, "GPUs (/dev/nvidiaN) the node must have")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitInvalidConfig;
  }
  const HealthReport r = CheckNodeHealth(o);
  if (json) {
    std::printf("%s\n", r.ToJson().dump().c_str());
  } else {
    std::printf("%s: gemm %.1f GFLOP/s (floor %.1f), all-reduce %.2f GB/s on %s%s, %.2f s\n",
                r.healthy ? "healthy" : "UNHEALTHY", r.gemm_gflops, o.min_gemm_gflops,
                r.allreduce_gbps, o.data_host.c_str(),
                r.gpus_found >= 0 ? (", " + std::to_string(r.gpus_found) + " GPU(s)").c_str() : "",
                r.seconds);
    for (const auto& p : r.problems) std::printf("  %s\n", p.c_str());
  }
  std::fflush(stdout);
  if (drain && UpdateSlurm(scontrol, NodeName(node), r) != 0) return kExitFailure;
  return r.healthy ? kExitOk : kExitFailure;
}

}  // namespace moerun::worker
