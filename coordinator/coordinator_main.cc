// moerun-coordinator: owns jobs, placement, membership and their durable state (DESIGN.md §1,
// §6). State lives under --state-dir:
//   coordinator.key, coordinator.key_secret   its CURVE key pair (created on first start)
//   authorized_keys                           client public keys allowed to connect
//   db/                                       RocksDB: jobs, events, metrics, manifests
//   endpoint                                  the address it listens on, port resolved
//   coordinator.log                           its log (also on stderr)
// SIGTERM/SIGINT stop it cleanly; after a SIGKILL, starting it again on the same state dir
// and address picks every job up where it was.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/clock.h"
#include "common/control_socket.h"
#include "common/curve_auth.h"
#include "common/exit_codes.h"
#include "coordinator/service/control_server.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/state/coordinator_store.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

int Fail(const std::string& what) {
  spdlog::error("{}", what);
  return moerun::kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  using namespace moerun;
  CLI::App app{"moerun-coordinator: owns jobs, placement, heartbeats and checkpoint commits"};
  std::string bind = "tcp://127.0.0.1:7100", state_dir, jobs_dir;
  coordinator::CoordinatorSettings settings;
  app.add_option("--bind", bind, "ZeroMQ control-plane address (tcp://HOST:PORT, PORT * = any)")
      ->capture_default_str();
  app.add_option("--state-dir", state_dir, "directory for the RocksDB state and CURVE keys")
      ->required();
  app.add_option("--jobs-dir", jobs_dir,
                 "parent of job run dirs when a submit names none [STATE_DIR/jobs]");
  app.add_option("--heartbeat-interval-ms", settings.heartbeat_interval_ms,
                 "how often daemons send heartbeats")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(10), int64_t(600000)));
  app.add_option("--heartbeat-timeout-ms", settings.heartbeat_timeout_ms,
                 "a daemon silent this long is dead")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(50), int64_t(3600000)));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitInvalidConfig;
  }
  if (settings.heartbeat_timeout_ms <= settings.heartbeat_interval_ms) {
    std::fprintf(stderr, "moerun-coordinator: --heartbeat-timeout-ms must exceed the interval\n");
    return kExitInvalidConfig;
  }
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) {
    std::fprintf(stderr, "moerun-coordinator: state dir %s: %s\n", state_dir.c_str(),
                 ec.message().c_str());
    return kExitFailure;
  }
  state_dir = fs::absolute(state_dir).lexically_normal().string();
  settings.jobs_dir = jobs_dir.empty() ? state_dir + "/jobs" : fs::absolute(jobs_dir).string();

  auto file_sink =
      std::make_shared<spdlog::sinks::basic_file_sink_mt>(state_dir + "/coordinator.log");
  auto err_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger =
      std::make_shared<spdlog::logger>("coordinator", spdlog::sinks_init_list{file_sink, err_sink});
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  auto keys = LoadCurveKeyPair(state_dir, kCoordinatorKeyName);
  if (!keys.ok()) {
    if (fs::exists(state_dir + "/coordinator.key")) return Fail(keys.status().message());
    keys = GenerateCurveKeyPair();
    if (!keys.ok()) return Fail(keys.status().message());
    Status s = SaveCurveKeyPair(state_dir, kCoordinatorKeyName, keys.value());
    if (!s.ok()) return Fail(s.message());
    spdlog::info("created the coordinator's key pair in {}", state_dir);
  }
  const std::string auth_path = state_dir + "/authorized_keys";
  if (!fs::exists(auth_path)) {
    std::ofstream(auth_path) << "# one client public key (client.key) per line\n";
    spdlog::warn("{} was empty: no daemon or client can connect until its key is added", auth_path);
  }
  auto authorized = LoadAuthorizedKeys(auth_path);
  if (!authorized.ok()) return Fail(authorized.status().message());

  auto store = coordinator::CoordinatorStore::Open(state_dir + "/db");
  if (!store.ok()) return Fail(store.status().message());
  auto server = coordinator::ControlServer::Bind(bind, keys.value(), authorized.value());
  if (!server.ok()) return Fail(server.status().message());
  WallClock clock;
  coordinator::ControlServer* srv = server.value().get();
  auto coord = coordinator::Coordinator::Open(
      store.value().get(), &clock, settings,
      [srv](const std::string& peer, const Envelope& e) { return srv->Send(peer, e); });
  if (!coord.ok()) return Fail(coord.status().message());
  {
    std::ofstream out(state_dir + "/endpoint.tmp", std::ios::trunc);
    out << srv->endpoint() << "\n";
  }
  fs::rename(state_dir + "/endpoint.tmp", state_dir + "/endpoint", ec);
  spdlog::info("coordinator listening on {} ({} authorized keys), state in {}", srv->endpoint(),
               authorized->size(), state_dir);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  srv->Run(coord.value().get(), g_stop);
  spdlog::info("coordinator stopping");
  return kExitOk;
}
