// moerun-coordinator: owns jobs, placement, membership and their durable state
// (docs/architecture.md §1, §6). State lives under --state-dir:
//   coordinator.key, coordinator.key_secret   its CURVE key pair (created on first start)
//   authorized_keys                           client public keys allowed to connect
//   db/                                       RocksDB: jobs, events, metrics, manifests
//   endpoint                                  the address it listens on, port resolved
//   coordinator.log                           its log (also on stderr)
//   http.token, http_endpoint                 the HTTP API's bearer token (0600) and URL
// SIGTERM/SIGINT stop it cleanly; after a SIGKILL, starting it again on the same state dir
// and address picks every job up where it was.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

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
#include "common/service_notifier.h"
#include "coordinator/http/http_api.h"
#include "coordinator/service/control_server.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/state/coordinator_store.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// The bearer token for HTTP writes: made on first start (random, 0600), kept after.
moerun::Result<std::string> HttpToken(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (in >> token && token.size() >= 16) return token;
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  unsigned char raw[24];
  if (!urandom.read(reinterpret_cast<char*>(raw), sizeof raw))
    return moerun::Status::IOError("cannot read /dev/urandom for the HTTP token");
  static const char* hex = "0123456789abcdef";
  token.clear();
  for (unsigned char b : raw) token += std::string{hex[b >> 4], hex[b & 15]};
  std::ofstream(path, std::ios::trunc).close();
  if (chmod(path.c_str(), 0600) != 0) return moerun::Status::IOError("cannot restrict " + path);
  std::ofstream out(path, std::ios::trunc);
  out << token << "\n";
  if (!out) return moerun::Status::IOError("cannot write " + path);
  return token;
}

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
  std::string http = "127.0.0.1:7180";
  app.add_option("--http", http,
                 "HOST:PORT of the HTTP API and Prometheus /metrics (PORT 0: any free port; "
                 "'off': none)")
      ->capture_default_str();
  app.add_option("--forget-dead-workers-after-ms", settings.forget_dead_workers_ms,
                 "forget a daemon dead this long that no job waits for (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(365) * 24 * 3600 * 1000));
  bool insecure_data_plane = false;
  app.add_flag("--insecure-data-plane", insecure_data_plane,
               "trainers' data plane without CURVE (a trusted fabric only: any host that reaches "
               "a trainer's port can then send it frames)");
  std::vector<std::string> run_roots;
  app.add_option("--allowed-run-roots", run_roots,
                 "directories (absolute, comma-separated or repeated) below which submitted jobs "
                 "may put their run dir and checkpoint.dir [any but system directories]")
      ->delimiter(',');
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitInvalidConfig;
  }
  if (settings.heartbeat_timeout_ms <= settings.heartbeat_interval_ms) {
    std::fprintf(stderr, "moerun-coordinator: --heartbeat-timeout-ms must exceed the interval\n");
    return kExitInvalidConfig;
  }
  auto roots = coordinator::RunRoots::Create(run_roots);
  if (!roots.ok()) {
    std::fprintf(stderr, "moerun-coordinator: %s\n", roots.status().message().c_str());
    return kExitInvalidConfig;
  }
  settings.run_roots = std::move(roots.value());
  settings.data_plane_curve = !insecure_data_plane;
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) {
    std::fprintf(stderr, "moerun-coordinator: state dir %s: %s\n", state_dir.c_str(),
                 ec.message().c_str());
    return kExitFailure;
  }
  state_dir = fs::absolute(state_dir).lexically_normal().string();
  settings.jobs_dir = jobs_dir.empty() ? state_dir + "/jobs" : fs::absolute(jobs_dir).string();

  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file_sink;
  try {
    file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(state_dir + "/coordinator.log");
  } catch (const spdlog::spdlog_ex& e) {  // an unwritable state dir: no retry can help
    std::fprintf(stderr,
                 "moerun-coordinator: log file %s/coordinator.log: %s: fix the "
                 "directory's permissions or attributes\n",
                 state_dir.c_str(), e.what());
    return kExitBadData;
  }
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
  std::unique_ptr<coordinator::HttpApi> http_api;
  if (http != "off") {
    const size_t colon = http.rfind(':');
    int port = -1;
    try {
      port = colon == std::string::npos ? -1 : std::stoi(http.substr(colon + 1));
    } catch (const std::exception&) {
    }
    if (port < 0 || port > 65535) {
      std::fprintf(stderr, "moerun-coordinator: --http %s: expected HOST:PORT or off\n",
                   http.c_str());
      return kExitInvalidConfig;
    }
    auto token = HttpToken(state_dir + "/http.token");
    if (!token.ok()) return Fail(token.status().message());
    auto api = coordinator::HttpApi::Start(http.substr(0, colon), port, token.value());
    if (!api.ok()) {
      // The control plane matters more than its web view: go on without it, loudly.
      spdlog::error("{}; the coordinator runs without its HTTP API", api.status().message());
    } else {
      http_api = std::move(api.value());
      const std::string url =
          "http://" + http.substr(0, colon) + ":" + std::to_string(http_api->port());
      std::ofstream(state_dir + "/http_endpoint", std::ios::trunc) << url << "\n";
      spdlog::info("HTTP API and /metrics at {} (writes need the bearer token in {}/http.token)",
                   url, state_dir);
    }
  }
  // Wall time for what is shown and stored; monotonic time for every failure decision, so an
  // NTP step declares no daemon or job dead.
  WallClock wall;
  SystemClock timer;
  coordinator::ControlServer* srv = server.value().get();
  auto coord =
      coordinator::Coordinator::Open(store.value().get(), &wall, &timer, settings,
                                     [srv, &http_api](const std::string& peer, const Envelope& e) {
                                       if (peer.rfind("http:", 0) == 0)
                                         return http_api && http_api->Deliver(peer, e);
                                       return srv->Send(peer, e);
                                     });
  if (!coord.ok()) return Fail(coord.status().message());
  {
    std::ofstream out(state_dir + "/endpoint.tmp", std::ios::trunc);
    out << srv->endpoint() << "\n";
  }
  fs::rename(state_dir + "/endpoint.tmp", state_dir + "/endpoint", ec);
  spdlog::info("coordinator listening on {} ({} authorized keys), state in {}", srv->endpoint(),
               authorized->size(), state_dir);
  if (settings.run_roots.roots().empty()) {
    spdlog::info("jobs may write anywhere but system directories (no --allowed-run-roots)");
  } else {
    std::string roots;
    for (const auto& r : settings.run_roots.roots()) roots += (roots.empty() ? "" : ", ") + r;
    spdlog::info("jobs may write below {} (--allowed-run-roots)", roots);
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  coordinator::Coordinator* c = coord.value().get();
  // Under systemd (scripts/systemd/moerun-coordinator.service): ready now, and a watchdog ping
  // from the serving loop, so a coordinator whose loop stops turning is restarted.
  ServiceNotifier notifier;
  notifier.Ready("listening on " + srv->endpoint());
  srv->Run(c, g_stop, [&http_api, c, &notifier] {
    notifier.Tick();
    if (!http_api) return;
    for (const auto& [peer, env] : http_api->TakeRequests()) c->Handle(peer, env);
  });
  notifier.Stopping();
  spdlog::info("coordinator stopping");
  return kExitOk;
}
