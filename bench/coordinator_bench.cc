#include "bench/coordinator_bench.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/control_socket.h"
#include "common/curve_auth.h"
#include "common/protocol.h"
#include "coordinator/service/control_server.h"
#include "coordinator/service/coordinator.h"
#include "coordinator/state/coordinator_store.h"

namespace moerun::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// The simulated daemons (the child process), in threads of at most kDaemonsPerThread so no
// thread's zmq_poll over its sockets costs more than the latency being measured. Writes
// "R\n" once all registered, then one JSON line with the round-trip times of the window.
constexpr int kDaemonsPerThread = 1024;

struct SimShared {
  std::atomic<int> registered{0};
  std::atomic<int64_t> measure_from{-1}, measure_until{-1};
  std::mutex mu;
  std::vector<double> rtt_ms;
};

void SimulateSlice(const CoordinatorBenchArgs& a, const std::string& endpoint,
                   const ClientKeys& keys, zmq::context_t& ctx, int lo, int hi, int out_fd,
                   SimShared* shared, int64_t start) {
  const int n = hi - lo;
  std::vector<std::unique_ptr<zmq::socket_t>> socks;
  for (int i = lo; i < hi; ++i) {
    auto s = ConnectDealer(ctx, keys, {endpoint, "worker:sim-" + std::to_string(i), false});
    if (!s.ok()) {
      std::fprintf(stderr, "daemon %d: %s\n", i, s.status().message().c_str());
      _exit(1);
    }
    socks.push_back(std::move(s.value()));
  }
  std::vector<zmq::pollitem_t> items;
  for (auto& s : socks) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
  std::vector<int64_t> sent_us(size_t(n), 0), next_send(size_t(n), 0);
  std::vector<bool> registered(size_t(n), false);
  std::vector<double> rtt_ms;
  const int64_t interval_us = a.interval_ms * 1000;
  for (int i = 0; i < n; ++i) next_send[size_t(i)] = start + interval_us * (lo + i) / a.daemons;
  int64_t seq = 0;
  for (;;) {
    const int64_t now = NowUs();
    const int64_t until = shared->measure_until.load();
    if (until > 0 && now >= until) break;
    for (int i = 0; i < n; ++i) {
      if (now < next_send[size_t(i)]) continue;
      next_send[size_t(i)] += interval_us;
      Envelope e{registered[size_t(i)] ? MessageType::kHeartbeat : MessageType::kRegister,
                 0,
                 "",
                 "worker:sim-" + std::to_string(lo + i),
                 {{"host", "sim-" + std::to_string(lo + i)},
                  {"devices", 8},
                  {"backend", "cuda"},
                  {"data_host", "10.0.0.1"},
                  {"pid", 1000 + lo + i},
                  {"seq", ++seq},
                  {"trainers", nlohmann::json::array()}}};
      sent_us[size_t(i)] = NowUs();
      (void)SendEnvelope(*socks[size_t(i)], e);
    }
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(1));
    for (size_t i = 0; i < items.size(); ++i) {
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      zmq::message_t m;
      while (socks[i]->recv(m, zmq::recv_flags::dontwait)) {
        auto e = DecodeEnvelope(m.to_string_view());
        if (!e.ok()) continue;
        const int64_t t = NowUs();
        const int64_t from = shared->measure_from.load();
        if (e->type == MessageType::kRegistered && !registered[i]) {
          registered[i] = true;
          if (shared->registered.fetch_add(1) + 1 == a.daemons) {
            WriteAll(out_fd, "R\n");
            shared->measure_from.store(t);
            shared->measure_until.store(t + int64_t(a.seconds * 1e6));
          }
        } else if (e->type == MessageType::kReply && from > 0 && sent_us[i] >= from) {
          rtt_ms.push_back(double(t - sent_us[i]) / 1000.0);
        }
      }
    }
  }
  std::lock_guard<std::mutex> lock(shared->mu);
  shared->rtt_ms.insert(shared->rtt_ms.end(), rtt_ms.begin(), rtt_ms.end());
}

void SimulateDaemons(const CoordinatorBenchArgs& a, const std::string& endpoint,
                     const ClientKeys& keys, int out_fd) {
  zmq::context_t ctx(2);
  ctx.set(zmq::ctxopt::max_sockets, a.daemons + 64);
  SimShared shared;
  const int64_t start = NowUs();
  std::vector<std::thread> threads;
  for (int lo = 0; lo < a.daemons; lo += kDaemonsPerThread) {
    const int hi = std::min(a.daemons, lo + kDaemonsPerThread);
    threads.emplace_back(
        [&, lo, hi] { SimulateSlice(a, endpoint, keys, ctx, lo, hi, out_fd, &shared, start); });
  }
  for (auto& t : threads) t.join();
  std::vector<double>& rtt_ms = shared.rtt_ms;
  std::sort(rtt_ms.begin(), rtt_ms.end());
  auto pct = [&](double p) {
    return rtt_ms.empty() ? -1.0
                          : rtt_ms[std::min(rtt_ms.size() - 1, size_t(p * double(rtt_ms.size())))];
  };
  nlohmann::json r = {{"replies", rtt_ms.size()},
                      {"rtt_ms_p50", pct(0.5)},
                      {"rtt_ms_p99", pct(0.99)},
                      {"rtt_ms_max", rtt_ms.empty() ? -1.0 : rtt_ms.back()},
                      {"registration_s", double(shared.measure_from.load() - start) / 1e6}};
  WriteAll(out_fd, r.dump() + "\n");
}

}  // namespace

int RunCoordinatorBench(const CoordinatorBenchArgs& a) {
  namespace fs = std::filesystem;
  spdlog::set_level(spdlog::level::warn);  // thousands of "registered" lines say nothing
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < rlim_t(a.daemons) * 3 + 256) {
    std::fprintf(stderr,
                 "moerun-bench coordinator: %d daemons need ~%d open files; the limit is %llu\n",
                 a.daemons, a.daemons * 3 + 256, (unsigned long long)lim.rlim_cur);
    return 1;
  }
  const std::string dir = "/tmp/moerun-bench-coordinator-" + std::to_string(getpid());
  fs::remove_all(dir);
  auto server_keys = GenerateCurveKeyPair().value();
  const ClientKeys client{GenerateCurveKeyPair().value(), server_keys.public_key};
  auto store = coordinator::CoordinatorStore::Open(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().message().c_str());
    return 1;
  }
  auto server = coordinator::ControlServer::Bind("tcp://127.0.0.1:*", server_keys,
                                                 {client.client.public_key});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().message().c_str());
    return 1;
  }
  WallClock wall_clock;
  SystemClock timer;
  coordinator::ControlServer* srv = server.value().get();
  auto coord = coordinator::Coordinator::Open(
      store.value().get(), &wall_clock, &timer,
      {a.interval_ms, std::max<int64_t>(5 * a.interval_ms, 5000), dir + "/jobs"},
      [srv](const std::string& peer, const Envelope& e) { return srv->Send(peer, e); });
  if (!coord.ok()) {
    std::fprintf(stderr, "%s\n", coord.status().message().c_str());
    return 1;
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    SimulateDaemons(a, srv->endpoint(), client, fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::atomic<bool> stop{false};
  std::thread loop([&] { srv->Run(coord.value().get(), stop); });
  FILE* in = fdopen(fds[0], "r");
  char line[4096];
  double cpu0 = 0;
  SteadyClock::time_point t0;
  nlohmann::json result;
  while (std::fgets(line, sizeof line, in)) {
    if (line[0] == 'R') {
      cpu0 = CpuSeconds();
      t0 = SteadyClock::now();
    } else {
      result = nlohmann::json::parse(line, nullptr, false);
      break;
    }
  }
  const double cpu = CpuSeconds() - cpu0;
  const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  int alive = 0;
  for (const auto& w : coord.value()->workers().All()) alive += w.alive ? 1 : 0;
  const uint64_t handled = coord.value()->counters().received;
  stop.store(true);
  loop.join();
  int status = 0;
  waitpid(child, &status, 0);
  fs::remove_all(dir);
  if (!result.is_object()) {
    std::fprintf(stderr, "moerun-bench coordinator: the simulated daemons failed\n");
    return 1;
  }
  result["bench"] = "coordinator";
  result["daemons"] = a.daemons;
  result["heartbeat_interval_ms"] = a.interval_ms;
  result["seconds"] = wall;
  result["coordinator_cpu_percent"] = 100.0 * cpu / wall;
  result["handled_per_s"] = double(result.value("replies", 0)) / wall;
  result["messages_handled"] = handled;
  result["replies_unroutable"] = coord.value()->counters().unroutable;
  result["workers_alive"] = alive;
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace moerun::bench
