// Several hosts on one machine: Linux network namespaces joined by a bridge, a coordinator
// and three daemons each on its own address (10.77.0.1-4), the third daemon a spare. One
// working daemon is cut off the network mid-run: the coordinator must notice the silence,
// move its rank to the spare, and finish the job; the cut-off daemon must stop its own
// trainer once its lease runs out. Needs root (CAP_NET_ADMIN); without it the test reports
// itself skipped (exit code 77).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/process.h"
#include "tests/spec_text.h"
#include "tests/temp_path.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

int Sh(const std::string& cmd) {
  const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Namespaces "<prefix>hub" (the bridge) and "<prefix><node>"; removed on destruction.
class Network {
 public:
  explicit Network(std::string prefix) : prefix_(std::move(prefix)) {}
  ~Network() {
    for (const auto& n : made_) Sh("ip netns del " + n);
  }
  bool Hub() {
    if (!Add("hub")) return false;
    return Sh("ip -n " + Ns("hub") + " link add br0 type bridge") == 0 &&
           Sh("ip -n " + Ns("hub") + " link set br0 up") == 0;
  }
  bool Node(const std::string& node, int host) {
    const std::string v = prefix_ + node + "v", h = prefix_ + node + "h";
    return Add(node) && Sh("ip link add " + v + " type veth peer name " + h) == 0 &&
           Sh("ip link set " + v + " netns " + Ns(node)) == 0 &&
           Sh("ip link set " + h + " netns " + Ns("hub")) == 0 &&
           Sh("ip -n " + Ns("hub") + " link set " + h + " master br0 up") == 0 &&
           Sh("ip -n " + Ns(node) + " addr add 10.77.0." + std::to_string(host) + "/24 dev " + v) ==
               0 &&
           Sh("ip -n " + Ns(node) + " link set " + v + " up") == 0 &&
           Sh("ip -n " + Ns(node) + " link set lo up") == 0;
  }
  // The node's cable, pulled out at the bridge.
  bool Cut(const std::string& node) {
    return Sh("ip -n " + Ns("hub") + " link set " + prefix_ + node + "h down") == 0;
  }
  std::string Ns(const std::string& node) const { return prefix_ + node; }

 private:
  bool Add(const std::string& node) {
    if (Sh("ip netns add " + Ns(node)) != 0) return false;
    made_.push_back(Ns(node));
    return true;
  }
  std::string prefix_;
  std::vector<std::string> made_;
};

// `args` run inside network namespace `ns`.
pid_t SpawnIn(const std::string& ns, std::vector<std::string> args, const std::string& log) {
  args.insert(args.begin(), {"netns", "exec", ns});
  return SpawnLogged("ip", args, log);
}

TEST_CASE("a daemon cut off the network: its rank moves to the spare and the job completes") {
  const std::string prefix = "mr" + std::to_string(getpid() % 100000);
  Network net(prefix);
  if (!net.Hub()) {
    std::fprintf(stderr,
                 "skipped: cannot create network namespaces here (needs root and `ip netns`)\n");
    std::exit(77);
  }
  REQUIRE(net.Node("c", 1));
  REQUIRE(net.Node("a", 2));
  REQUIRE(net.Node("b", 3));
  REQUIRE(net.Node("s", 4));

  const std::string dir = FreshTempPath("netns", "spare", true);
  Output k = RunMoerun("keygen " + dir + "/keys");
  REQUIRE(k.exit_code == 0);
  fs::create_directories(dir + "/coordinator");
  std::ofstream(dir + "/coordinator/authorized_keys") << k.out;
  const std::string address = "tcp://10.77.0.1:7100";
  std::vector<pid_t> pids;
  pids.push_back(
      SpawnIn(net.Ns("c"),
              {BinDir() + "/moerun-coordinator", "--state-dir", dir + "/coordinator", "--bind",
               address, "--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "2000"},
              dir + "/coordinator.out"));
  REQUIRE(WaitFor([&] { return fs::exists(dir + "/coordinator/endpoint"); }, 10));
  fs::copy_file(dir + "/coordinator/coordinator.key", dir + "/keys/coordinator.key");
  int host = 2;
  for (const char* node : {"a", "b", "s"}) {
    pids.push_back(SpawnIn(net.Ns(node),
                           {BinDir() + "/moerun-worker", "--coordinator", address, "--keys",
                            dir + "/keys", "--state-dir", dir + "/" + node, "--id", node,
                            "--devices", "1", "--data-host", "10.77.0." + std::to_string(host++)},
                           dir + "/" + node + ".out"));
  }
  auto cli = [&](const std::string& args) {
    return RunMoerun(args + " --coordinator " + address + " --keys " + dir + "/keys");
  };
  // The CLI speaks from the coordinator's namespace.
  auto query = [&](const std::string& args) {
    const std::string cmd = "ip netns exec " + net.Ns("c") + " " + std::string(MOERUN_BIN) + " " +
                            args + " --coordinator " + address + " --keys " + dir + "/keys";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    if (p) pclose(p);
    return json::parse(out, nullptr, false);
  };
  (void)cli;
  REQUIRE(WaitFor(
      [&] {
        const json st = query("status --json");
        return st.is_object() && st["workers"].size() == 3;
      },
      20));

  // A world-2 job (2 stages x 1 replica) that notices a silent peer within 10 s.
  std::string text = WorldTwoSpecText("spread");
  text += "fault_tolerance:\n  progress_timeout_ms: 10000\n  restart_backoff_ms: 200\n";
  std::ofstream(dir + "/spread.yaml") << text;
  const json submitted =
      query("submit " + dir + "/spread.yaml --json --steps 600 --run-dir " + dir + "/run");
  REQUIRE(submitted.is_object());
  const std::string job = submitted["job_id"];
  REQUIRE(WaitFor([&] { return query("status " + job + " --json").value("step", 0) >= 30; }, 60));
  json before = query("status " + job + " --json");
  std::set<std::string> used;
  for (const auto& r : before["ranks"]) used.insert(r["worker"]);
  REQUIRE(used == std::set<std::string>{"a", "b"});  // s is the spare

  REQUIRE(net.Cut("b"));
  REQUIRE(WaitFor(
      [&] { return query("status " + job + " --json").value("phase", "") == "SUCCEEDED"; }, 240));
  const json after = query("status " + job + " --json");
  CHECK(after["step"] == 600);
  CHECK(after["restarts"] == 1);
  std::set<std::string> now;
  for (const auto& r : after["ranks"]) now.insert(r["worker"]);
  CHECK(now == std::set<std::string>{"a", "s"});
  const json events = query("events " + job + " --json");
  bool saw = false;
  for (const auto& e : events)
    saw |= e["to"] == "RECOVERING" &&
           e["cause"].get<std::string>().find("worker b") != std::string::npos;
  CHECK_MESSAGE(saw, events.dump());
  // Cut off, daemon b stopped its own trainer when its lease ran out.
  CHECK(WaitFor(
      [&] {
        return ReadAll(dir + "/b/worker.log").find("stopping 1 trainer(s)") != std::string::npos;
      },
      10));
  for (auto it = pids.rbegin(); it != pids.rend(); ++it) Terminate(*it);
}

}  // namespace
}  // namespace moerun::testing
