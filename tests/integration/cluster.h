// Cluster: a moerun-coordinator and moerun-worker daemons in a fresh directory, with an
// authorized client key, for the integration tests that drive them through the `moerun` CLI
// and the HTTP API. Processes are real and are terminated with the object.
#pragma once

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/process.h"
#include "tests/spec_text.h"
#include "tests/temp_path.h"

namespace moerun::testing {

// A coordinator and daemons in a fresh directory, with an authorized client key.
class Cluster {
 public:
  // coordinator_args: added to the coordinator's command line; coordinator_data_limit_bytes:
  // its RLIMIT_DATA (through prlimit), so that a runaway allocation fails in it, not the
  // machine; 0 for none.
  explicit Cluster(const std::string& name, std::vector<std::string> coordinator_args = {},
                   uint64_t coordinator_data_limit_bytes = 0)
      : coordinator_args_(std::move(coordinator_args)),
        data_limit_(coordinator_data_limit_bytes),
        dir_(FreshTempPath("control", name, true)),
        coord_dir_(dir_ + "/coordinator"),
        keys_(dir_ + "/keys"),
        address_("ipc://@moerun-test-" + std::to_string(getpid()) + "-" + name) {
    Output k = RunMoerun("keygen " + keys_);
    REQUIRE(k.exit_code == 0);
    std::filesystem::create_directories(coord_dir_);
    std::ofstream(coord_dir_ + "/authorized_keys") << k.out;
    StartCoordinator();
    std::filesystem::copy_file(coord_dir_ + "/coordinator.key", keys_ + "/coordinator.key");
  }
  ~Cluster() {
    for (pid_t w : workers_) Terminate(w);
    Terminate(coordinator_);
  }

  void StartCoordinator() {
    std::filesystem::remove(coord_dir_ + "/endpoint");
    std::vector<std::string> args = {"--state-dir",
                                     coord_dir_,
                                     "--bind",
                                     address_,
                                     "--heartbeat-interval-ms",
                                     "200",
                                     "--heartbeat-timeout-ms",
                                     "5000",
                                     "--http",
                                     "127.0.0.1:0"};
    args.insert(args.end(), coordinator_args_.begin(), coordinator_args_.end());
    std::string program = BinDir() + "/moerun-coordinator";
    if (data_limit_ > 0) {  // prlimit sets the limit and execs: the pid is the coordinator's
      args.insert(args.begin(), {"--data=" + std::to_string(data_limit_), "--", program});
      program = "/usr/bin/prlimit";
    }
    coordinator_ = SpawnLogged(program, args, dir_ + "/coordinator.out");
    REQUIRE(WaitFor([&] { return std::filesystem::exists(coord_dir_ + "/endpoint"); }, 10));
  }
  void KillCoordinator() {
    kill(coordinator_, SIGKILL);
    int status;
    waitpid(coordinator_, &status, 0);
    coordinator_ = -1;
  }
  // state: the daemon's state dir and log name under the cluster dir [id].
  pid_t StartWorker(const std::string& id, int slots, const std::string& keys = "",
                    const std::string& state = "") {
    const std::string name = state.empty() ? id : state;
    const pid_t pid = SpawnLogged(
        BinDir() + "/moerun-worker",
        {"--coordinator", address_, "--keys", keys.empty() ? keys_ : keys, "--state-dir",
         dir_ + "/" + name, "--id", id, "--devices", std::to_string(slots)},
        dir_ + "/" + name + ".out");
    workers_.push_back(pid);
    return pid;
  }
  Output Cli(const std::string& args, const std::string& keys = "") const {
    return RunMoerun(args + " --coordinator " + address_ + " --keys " +
                     (keys.empty() ? keys_ : keys));
  }
  nlohmann::json Status() const {
    Output o = Cli("status --json");
    REQUIRE_MESSAGE(o.exit_code == 0, o.err);
    return nlohmann::json::parse(o.out);
  }
  nlohmann::json Job(const std::string& id) const {
    Output o = Cli("status " + id + " --json");
    REQUIRE_MESSAGE(o.exit_code == 0, o.err);
    return nlohmann::json::parse(o.out);
  }
  std::string Phase(const std::string& id) const { return Job(id).value("phase", ""); }
  void WaitForWorkers(size_t n) const {
    REQUIRE(WaitFor(
        [&] {
          size_t alive = 0;
          const nlohmann::json st = Status();
          for (const auto& w : st["workers"]) alive += w.value("alive", false);
          return alive >= n;
        },
        20));
  }
  std::string Submit(const std::string& spec, const std::string& extra = "") const {
    Output o = Cli("submit " + spec + " --json " + extra);
    REQUIRE_MESSAGE(o.exit_code == 0, o.err);
    return nlohmann::json::parse(o.out).value("job_id", "");
  }
  // A world-2 job (2 stages x 1 replica) written into the cluster dir.
  std::string SmallSpec(const std::string& name) const {
    const std::string path = dir_ + "/" + name + ".yaml";
    std::ofstream(path) << WorldTwoSpecText(name);
    return path;
  }

  const std::string& dir() const { return dir_; }
  const std::string& coordinator_dir() const { return coord_dir_; }
  const std::string& keys() const { return keys_; }
  const std::string& address() const { return address_; }
  pid_t coordinator() const { return coordinator_; }

 private:
  std::vector<std::string> coordinator_args_;
  uint64_t data_limit_ = 0;
  std::string dir_, coord_dir_, keys_, address_;
  pid_t coordinator_ = -1;
  std::vector<pid_t> workers_;
};

}  // namespace moerun::testing
