// A real Prometheus server (Debian's `prometheus`) scrapes a live coordinator every second
// while `moerun local` trains; the loss series queried back from Prometheus holds exactly the
// losses the trainers reported, and the per-rank step split and expert load arrive labelled.
// Without the prometheus binary the test reports itself skipped (exit code 77).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "tests/integration/process.h"
#include "tests/temp_path.h"

using moerun::testing::FreshTempPath;
using moerun::testing::ReadAll;
using moerun::testing::SpawnLogged;
using moerun::testing::Terminate;
using moerun::testing::WaitFor;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kPrometheus = "/usr/bin/prometheus";

// A port nobody listens on right now (the kernel's pick for port 0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

// Prometheus's instant query: the result vector, empty when it has no sample (yet).
json Query(httplib::Client& prom, const std::string& promql) {
  auto r = prom.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
  if (!r || r->status != 200) return json::array();
  auto j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || j.value("status", "") != "success") return json::array();
  return j["data"]["result"];
}

}  // namespace

TEST_CASE("Prometheus scrapes a live coordinator and the loss series comes back") {
  if (!fs::exists(kPrometheus)) {
    std::fprintf(stderr, "skipped: %s not found (apt install prometheus)\n", kPrometheus);
    std::exit(77);
  }
  const std::string dir = FreshTempPath("prometheus", "scrape", true);
  const std::string local_log = dir + "/local.log";
  // --linger keeps the coordinator up after the job, so the last scrapes still reach it.
  const pid_t local =
      SpawnLogged(MOERUN_BIN,
                  {"local", std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml",
                   "--run-dir", dir + "/run", "--steps", "3000", "--no-progress", "--linger", "60"},
                  local_log);
  std::string base, job;
  REQUIRE(WaitFor(
      [&] {
        const std::string out = ReadAll(local_log);
        std::smatch m;
        if (std::regex_search(out, m, std::regex(R"(HTTP API at (http://127\.0\.0\.1:\d+))")))
          base = m[1];
        if (std::regex_search(out, m, std::regex(R"(job (\S+) submitted)"))) job = m[1];
        return !base.empty() && !job.empty();
      },
      60));
  const std::string target = base.substr(std::string("http://").size());

  const int port = FreePort();
  std::ofstream(dir + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: moerun\n"
      << "    honor_labels: true  # keep the exposition's job label (the moerun job id)\n"
      << "    static_configs:\n      - targets: ['" << target << "']\n";
  const pid_t prom_pid = SpawnLogged(
      kPrometheus,
      {"--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/tsdb",
       "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"},
      dir + "/prometheus.log");
  httplib::Client prom("127.0.0.1", port);
  prom.set_connection_timeout(2);
  prom.set_read_timeout(5);

  // Several scrapes of the loss while the job trains (3000 steps: it outlasts the checks below;
  // a finished job's per-step series leave the exposition).
  const std::string loss_sel = "moerun_job_loss{job=\"" + job + "\"}";
  const bool scraped = WaitFor(
      [&] {
        json r = Query(prom, "count_over_time(" + loss_sel + "[5m])");
        return !r.empty() && std::stod(r[0]["value"][1].get<std::string>()) >= 3;
      },
      90);
  if (!scraped)
    FAIL_CHECK("no loss series in Prometheus; its log:\n" << ReadAll(dir + "/prometheus.log"));
  REQUIRE(scraped);

  // Every scraped loss is a loss some step reported (the coordinator's stored reports, read
  // after the scrapes so they include every step scraped).
  json range = Query(prom, loss_sel + "[5m]");
  REQUIRE(range.size() == 1);
  httplib::Client coordinator(base);
  auto stored = coordinator.Get("/api/jobs/" + job + "/metrics?since=0&limit=10000");
  REQUIRE(stored);
  REQUIRE(stored->status == 200);
  std::set<double> reported;
  const json metrics = json::parse(stored->body)["metrics"];
  for (const auto& m : metrics) reported.insert(m["loss"].get<double>());
  const json samples = range[0]["values"];
  CHECK(samples.size() >= 3);
  for (const auto& s : samples) {
    const double loss = std::stod(s[1].get<std::string>());
    CHECK_MESSAGE(reported.count(loss) == 1, "scraped loss " << s[1] << " was never reported");
  }
  CHECK(range[0]["metric"]["job"] == job);

  // The target is up, and the per-rank split and the expert load carry their labels.
  json up = Query(prom, "up{job=\"moerun\"}");
  REQUIRE(up.size() == 1);
  CHECK(up[0]["value"][1] == "1");
  json bubble = Query(prom, "moerun_rank_step_phase_seconds{job=\"" + job + "\",phase=\"bubble\"}");
  CHECK(bubble.size() == 4);  // train-fast has 4 ranks
  json load = Query(prom, "sum by (layer) (moerun_expert_load{job=\"" + job + "\"})");
  CHECK(load.size() == 2);  // MoE layers 1 and 2
  for (const auto& l : load) CHECK(std::stod(l["value"][1].get<std::string>()) > 0);
  json workers = Query(prom, "sum(moerun_worker_up)");
  REQUIRE(workers.size() == 1);
  CHECK(workers[0]["value"][1] == "2");

  Terminate(prom_pid);
  Terminate(local, SIGINT);
  fs::remove_all(dir);
}
