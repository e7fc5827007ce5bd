// moerun-worker: the per-host daemon that registers with the coordinator and supervises one
// trainer process per device (docs/architecture.md §1, worker/daemon/worker_daemon.h).
#include <fcntl.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/exit_codes.h"
#include "common/route_address.h"
#include "common/shm_dir.h"
#include "worker/daemon/worker_daemon.h"
#include "worker/health/health_command.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

std::string HostName() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  using namespace moerun;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--health-check") == 0) return worker::RunHealthCheck(argc, argv);
  }
  CLI::App app{"moerun-worker: per-host daemon that supervises one trainer per device"};
  worker::DaemonOptions o;
  o.host = HostName();
  app.add_option("--coordinator", o.coordinator,
                 "coordinator control address, e.g. tcp://10.0.0.1:7100")
      ->required()
      ->envname("MOERUN_COORDINATOR");
  app.add_option("--keys", o.keys_dir,
                 "directory with client.key, client.key_secret and coordinator.key")
      ->required()
      ->envname("MOERUN_KEYS");
  app.add_option("--state-dir", o.state_dir, "directory for trainer logs and specs")->required();
  app.add_option("--id", o.id, "this daemon's id, unique in the cluster [host name]");
  app.add_option("--devices", o.devices, "devices (trainer slots) this host offers")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--backend", o.backend, "cpu | cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--data-host", o.data_host,
                 "address this host's trainers bind their data plane on (reachable by peers); "
                 "auto: the address this host reaches the coordinator from")
      ->capture_default_str();
  app.add_option("--trainer", o.trainer_program, "the moerun binary [next to this one]");
  app.add_option("--memory-dir", o.memory_dir,
                 "where trainers keep memory snapshots: on tmpfs, outliving them "
                 "[/dev/shm/moerun-<hash of the state dir>]");
  int64_t standbys = -1;
  app.add_option("--standby-trainers", standbys,
                 "warm standby trainer processes kept ready for restarts; 0: none [one per slot]")
      ->check(CLI::Range(int64_t(0), int64_t(4096)));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitInvalidConfig;
  }
  if (o.id.empty()) o.id = o.host;
  if (o.data_host == "auto") {
    auto local = LocalAddressToward(o.coordinator);
    if (!local.ok()) {
      std::fprintf(stderr, "moerun-worker: --data-host auto: %s: pass the address instead\n",
                   local.status().message().c_str());
      return ExitCodeFor(local.status());
    }
    o.data_host = local.value();
  }
  o.standby_trainers = standbys < 0 ? o.devices : standbys;
  if (o.trainer_program.empty()) {
    o.trainer_program = (fs::read_symlink("/proc/self/exe").parent_path() / "moerun").string();
  }
  std::error_code ec;
  fs::create_directories(o.state_dir, ec);
  if (ec) {
    std::fprintf(stderr, "moerun-worker: state dir %s: %s\n", o.state_dir.c_str(),
                 ec.message().c_str());
    return kExitFailure;
  }
  o.state_dir = fs::absolute(o.state_dir).lexically_normal().string();
  // One daemon per state dir, held for the process's life (a relaunch after a crash finds it
  // free): two daemons sharing one would start each other's trainers' files over.
  const std::string lock_path = o.state_dir + "/daemon.lock";
  const int lock = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) {  // an unwritable state dir, as for the log file below: no retry helps
    std::fprintf(stderr, "moerun-worker: %s: %s: fix the state dir's permissions or attributes\n",
                 lock_path.c_str(), std::strerror(errno));
    return kExitBadData;
  }
  if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {0};
    (void)!pread(lock, holder, sizeof holder - 1, 0);
    if (char* nl = std::strchr(holder, '\n')) *nl = 0;
    std::fprintf(stderr,
                 "moerun-worker: state dir %s is in use by another moerun-worker (pid %s, %s): "
                 "give each daemon its own --state-dir and --id\n",
                 o.state_dir.c_str(), holder[0] ? holder : "?", lock_path.c_str());
    return kExitInvalidConfig;
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(lock, 0) != 0 || pwrite(lock, pid.data(), pid.size(), 0) < 0) {
    std::fprintf(stderr, "moerun-worker: cannot write %s\n", lock_path.c_str());
  }
  o.keys_dir = fs::absolute(o.keys_dir).lexically_normal().string();
  if (o.memory_dir.empty()) {
    // One per state dir: two daemons on a host never share it, a relaunched one finds it.
    o.memory_dir = ShmDirFor("", o.state_dir);
  }
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file_sink;
  try {
    file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.state_dir + "/worker.log");
  } catch (const spdlog::spdlog_ex& e) {  // an unwritable state dir: no retry can help
    std::fprintf(stderr,
                 "moerun-worker: log file %s/worker.log: %s: fix the directory's "
                 "permissions or attributes\n",
                 o.state_dir.c_str(), e.what());
    return kExitBadData;
  }
  auto err_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger =
      std::make_shared<spdlog::logger>("worker", spdlog::sinks_init_list{file_sink, err_sink});
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %l [" + o.id + "] %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  auto daemon = worker::WorkerDaemon::Create(o);
  if (!daemon.ok()) {
    spdlog::error("{}", daemon.status().message());
    return kExitInvalidConfig;
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  return daemon.value()->Run(g_stop);
}
