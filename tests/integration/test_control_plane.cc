// The control plane with real processes: a moerun-coordinator, moerun-worker daemons and the
// trainers they start, driven through the `moerun` CLI. Processes are killed for real.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "common/control_socket.h"
#include "common/protocol.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"
#include "tests/spec_text.h"
#include "tests/temp_path.h"

namespace moerun::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool Terminal(const std::string& phase) {
  return phase == "SUCCEEDED" || phase == "FAILED" || phase == "CANCELLED";
}

TEST_CASE("two jobs run at once while a third waits in the FIFO queue; all three finish") {
  Cluster c("queue");
  c.StartWorker("w0", 2);
  c.StartWorker("w1", 2);
  c.WaitForWorkers(2);
  const std::string spec = c.SmallSpec("small");
  // Long enough that neither of the first two jobs can end before the third is submitted,
  // even on a loaded 2-core machine (60 steps once did).
  constexpr int kSteps = 300;
  std::vector<std::string> jobs;
  std::vector<std::string> phases;
  for (int i = 0; i < 3; ++i) {
    Output o = c.Cli("submit " + spec + " --json --steps " + std::to_string(kSteps) +
                     " --run-dir " + c.dir() + "/run-" + std::to_string(i));
    REQUIRE_MESSAGE(o.exit_code == 0, o.err);
    const json reply = json::parse(o.out);
    jobs.push_back(reply["job_id"]);
    phases.push_back(reply["phase"]);
  }
  CHECK(phases[0] == "STARTING");
  CHECK(phases[1] == "STARTING");
  CHECK(phases[2] == "QUEUED");  // 4 slots, 2 ranks each
  // While the first two hold all four slots, the third stays queued.
  const json status = c.Status();
  int busy = 0;
  for (const auto& w : status["workers"]) busy += w.value("used", 0);
  CHECK(busy <= 4);
  REQUIRE(WaitFor(
      [&] {
        for (const auto& j : jobs)
          if (c.Phase(j) != "SUCCEEDED") return false;
        return true;
      },
      180));
  // The third said what it waited for, and started only after one of the first two ended.
  const json events = json::parse(c.Cli("events " + jobs[2] + " --json").out);
  REQUIRE(events.size() >= 4);
  CHECK(events[1]["from"] == "QUEUED");
  CHECK(events[1]["to"] == "QUEUED");
  CHECK(events[1]["cause"].get<std::string>().find("waiting for 2 slots") == 0);
  CHECK(events[2]["to"] == "STARTING");
  int64_t first_done = INT64_MAX;
  for (int i = 0; i < 2; ++i) {
    for (const auto& e : json::parse(c.Cli("events " + jobs[i] + " --json").out))
      if (e["to"] == "SUCCEEDED") first_done = std::min<int64_t>(first_done, e["time_ms"]);
  }
  CHECK(events[2]["time_ms"].get<int64_t>() >= first_done);
  for (int i = 0; i < 3; ++i) {
    const json j = c.Job(jobs[size_t(i)]);
    CHECK(j["step"] == kSteps);
    CHECK(j["restarts"] == 0);
  }
  // People get tables.
  Output table = c.Cli("status");
  CHECK(table.out.find("SUCCEEDED") != std::string::npos);
  CHECK(table.out.find("WORKER") != std::string::npos);
  Output log = c.Cli("logs " + jobs[0] + " --rank 1");
  CHECK(log.exit_code == 0);
  CHECK(log.out.find("step 300/300") != std::string::npos);
}

TEST_CASE("cancel stops a running job's trainers and frees its slots") {
  Cluster c("cancel");
  const pid_t w = c.StartWorker("w0", 2);
  c.WaitForWorkers(1);
  const std::string job = c.Submit(c.SmallSpec("long"), "--steps 100000");
  REQUIRE(WaitFor([&] { return c.Job(job).value("step", 0) >= 3; }, 60));
  CHECK(TrainersOf(w).size() == 2);
  Output o = c.Cli("cancel " + job);
  CHECK_MESSAGE(o.exit_code == 0, o.err);
  CHECK(c.Phase(job) == "CANCELLED");
  CHECK(WaitFor([&] { return TrainersOf(w).empty(); }, 20));
  const json events = json::parse(c.Cli("events " + job + " --json").out);
  CHECK(events.back()["to"] == "CANCELLED");
  CHECK(c.Status()["workers"][0]["used"] == 0);
  // Cancelling twice is a clear error, not a crash.
  Output again = c.Cli("cancel " + job);
  CHECK(again.exit_code != 0);
  CHECK(again.err.find("already ended") != std::string::npos);
  CHECK(Alive(c.coordinator()));
}

TEST_CASE("two jobs on one worker hold distinct device slots") {
  Cluster c("devices");
  c.StartWorker("w0", 4);
  c.WaitForWorkers(1);
  const std::string a = c.Submit(c.SmallSpec("first"), "--steps 100000");
  const std::string b = c.Submit(c.SmallSpec("second"), "--steps 100000");
  REQUIRE(WaitFor([&] { return c.Job(a).value("step", 0) >= 1 && c.Job(b).value("step", 0) >= 1; },
                  60));
  // The daemon logs each start with its device; all four ranks must differ.
  std::ifstream log(c.dir() + "/w0.out");
  std::set<std::string> devices;
  int starts = 0;
  for (std::string line; std::getline(log, line);) {
    const size_t at = line.find(" on device ");
    if (line.find("started pid") == std::string::npos || at == std::string::npos) continue;
    ++starts;
    const std::string device = line.substr(at + 11);
    devices.insert(device.substr(0, device.find(' ')));  // " (a warm standby)" may follow
  }
  CHECK(starts == 4);
  CHECK(devices == std::set<std::string>{"0", "1", "2", "3"});
  CHECK(c.Cli("cancel " + a).exit_code == 0);
  CHECK(c.Cli("cancel " + b).exit_code == 0);
}

TEST_CASE("a trainer's refusal fails the job once, with the trainer's reason") {
  Cluster c("refusal");
  c.StartWorker("w0", 2);
  c.WaitForWorkers(1);
  std::string text = WorldTwoSpecText("nodata");
  text.replace(text.find("/usr/share/games/fortunes"), 25, "/nonexistent/corpus");
  const std::string spec = c.dir() + "/nodata.yaml";
  std::ofstream(spec) << text;
  const std::string job = c.Submit(spec, "--run-dir " + c.dir() + "/run-nodata");
  REQUIRE(WaitFor([&] { return Terminal(c.Phase(job)); }, 60));
  CHECK(c.Phase(job) == "FAILED");
  const json events = json::parse(c.Cli("events " + job + " --json").out);
  const std::string cause = events.back().value("cause", "");
  CHECK_MESSAGE(cause.find("exited with code 3: DataLoss: data: data.paths: /nonexistent/corpus "
                           "does not exist") != std::string::npos,
                cause);
  CHECK(cause.find("(not retryable)") != std::string::npos);
  CHECK(c.Job(job).value("restarts", -1) == 0);
}

TEST_CASE("a client or a daemon without an authorized key is refused") {
  Cluster c("auth");
  const std::string stranger = c.dir() + "/stranger";
  REQUIRE(RunMoerun("keygen " + stranger + " --coordinator-key " + c.keys() + "/coordinator.key")
              .exit_code == 0);
  Output o = c.Cli("submit " + c.SmallSpec("sneaky"), stranger);
  CHECK(o.exit_code != 0);
  CHECK(o.err.find("refused this client's key") != std::string::npos);
  c.StartWorker("intruder", 4, stranger);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const json status = c.Status();
  CHECK(status["workers"].empty());
  CHECK(status["jobs"].empty());
  CHECK(status["counters"]["auth_denied"].get<int>() >= 2);
  CHECK(ReadAll(c.dir() + "/coordinator.out").find("not in authorized_keys") != std::string::npos);
}

TEST_CASE("a coordinator killed with SIGKILL and restarted lets the running job finish") {
  Cluster c("restart");
  c.StartWorker("w0", 1);
  c.StartWorker("w1", 1);
  c.WaitForWorkers(2);
  const std::string job = c.Submit(c.SmallSpec("survivor"), "--steps 1500");
  REQUIRE(WaitFor([&] { return c.Job(job).value("step", 0) >= 10; }, 60));
  c.KillCoordinator();
  // Trainers keep training; the daemons' lease (the 5 s heartbeat timeout) outlasts this.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  c.StartCoordinator();
  // The reloaded job is still running, and the trainers' reports reach the new coordinator.
  const json first = c.Job(job);
  CHECK(first["phase"] == "RUNNING");
  REQUIRE(WaitFor([&] { return c.Job(job).value("step", 0) > first.value("step", 0); }, 60));
  REQUIRE(WaitFor([&] { return Terminal(c.Phase(job)); }, 240));
  const json j = c.Job(job);
  CHECK(j["phase"] == "SUCCEEDED");
  CHECK(j["generation"] == 1);  // no restart of training
  CHECK(j["restarts"] == 0);
  CHECK(j["step"] == 1500);
  for (const auto& w : c.Status()["workers"]) CHECK(w["alive"] == true);
}

TEST_CASE("10,000 malformed messages leave the coordinator serving") {
  Cluster c("malformed");
  auto keys = LoadClientKeys(c.keys());
  REQUIRE(keys.ok());
  zmq::context_t ctx;
  std::vector<std::unique_ptr<zmq::socket_t>> sockets;
  for (const char* id : {"cli:fuzz", "worker:fuzz", "trainer:nojob:1:0"}) {
    auto s = ConnectDealer(ctx, keys.value(), {c.address(), id, false});
    REQUIRE(s.ok());
    sockets.push_back(std::move(s.value()));
  }
  std::mt19937 rng(2026);
  auto bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& ch : s) ch = char(rng());
    return s;
  };
  const std::vector<MessageType> types = {
      MessageType::kRegister,   MessageType::kHeartbeat,  MessageType::kTrainerExited,
      MessageType::kRendezvous, MessageType::kStepReport, MessageType::kSubmitJob,
      MessageType::kCancelJob,  MessageType::kQuery,      MessageType::kReply};
  const std::vector<json> bodies = {
      {{"host", 7}},
      {{"host", "h"}, {"devices", "many"}, {"backend", "cpu"}, {"data_host", "x"}, {"pid", 1}},
      {{"trainers", "none"}},
      {{"trainers", {{{"job", 1}}}}},
      {{"rank", "zero"}},
      {{"spec_yaml", 42}},
      {{"spec_yaml", "job: {name: [}"}},
      {{"what", 7}},
      {{"what", "log"}, {"job", "nojob"}},
      {{"what", "nonsense"}},
      json::object()};
  int undecodable = 0;
  for (int i = 0; i < 10000; ++i) {
    zmq::socket_t& s = *sockets[size_t(i) % sockets.size()];
    const int kind = int(rng() % 10);
    std::string msg;
    if (kind < 4) {
      msg = bytes(rng() % 300);  // noise
      ++undecodable;
    } else if (kind < 6) {
      // A real header with a lie in it: bad version, type or lengths.
      Envelope e{types[rng() % types.size()], rng() % 3, "j", "fuzz", json::object()};
      msg = EncodeEnvelope(e).value();
      const size_t at = 4 + rng() % (msg.size() - 4);
      msg[at] = char(msg[at] ^ (1 + rng() % 255));
      if (msg.size() > 24 && rng() % 2) msg.resize(rng() % msg.size());
      if (!DecodeEnvelope(msg).ok()) ++undecodable;
    } else if (kind < 9) {
      // A valid envelope whose body makes no sense.
      Envelope e{types[rng() % types.size()], rng() % 3, rng() % 2 ? "nojob" : "", "fuzz",
                 bodies[rng() % bodies.size()]};
      msg = EncodeEnvelope(e).value();
    } else {
      // Two frames where one is expected.
      s.send(zmq::buffer(bytes(8)), zmq::send_flags::sndmore);
      msg = bytes(8);
      ++undecodable;
    }
    REQUIRE(s.send(zmq::buffer(msg), zmq::send_flags::none));
  }
  REQUIRE(
      WaitFor([&] { return c.Status()["counters"]["malformed"].get<int>() >= undecodable; }, 60));
  CHECK(Alive(c.coordinator()));
  const json counters = c.Status()["counters"];
  MESSAGE("counters after 10,000 bad messages: " << counters.dump());
  CHECK(counters["invalid"].get<int>() > 0);
  // Still serving: a worker registers and a real job runs to the end.
  c.StartWorker("w0", 2);
  c.WaitForWorkers(1);
  const std::string job = c.Submit(c.SmallSpec("after"), "--steps 20");
  CHECK(WaitFor([&] { return c.Phase(job) == "SUCCEEDED"; }, 120));
}

TEST_CASE("the HTTP API: reads, token-guarded writes, malformed bodies, Prometheus text") {
  Cluster c("http");
  c.StartWorker("w0", 2);
  c.WaitForWorkers(1);
  std::string url, token;
  std::ifstream(c.coordinator_dir() + "/http_endpoint") >> url;
  std::ifstream(c.coordinator_dir() + "/http.token") >> token;
  REQUIRE(url.rfind("http://127.0.0.1:", 0) == 0);
  REQUIRE(token.size() >= 16);
  httplib::Client http(url);
  const httplib::Headers auth = {{"Authorization", "Bearer " + token}};
  const httplib::Headers wrong = {{"Authorization", "Bearer " + std::string(token.size(), 'x')}};

  auto st = http.Get("/api/status");
  REQUIRE(st);
  CHECK(st->status == 200);
  CHECK(json::parse(st->body)["workers"].size() == 1);

  const std::string yaml = ReadAll(c.SmallSpec("viahttp"));
  const std::string good = json({{"spec_yaml", yaml}, {"steps", 20}}).dump();
  auto no_token = http.Post("/api/jobs", good, "application/json");
  REQUIRE(no_token);
  CHECK(no_token->status == 401);
  auto bad_token = http.Post("/api/jobs", wrong, good, "application/json");
  REQUIRE(bad_token);
  CHECK(bad_token->status == 401);
  for (const std::string& body :
       {std::string("not json"), std::string("{\"spec_yaml\": 5}"), std::string("[1,2]")}) {
    auto r = http.Post("/api/jobs", auth, body, "application/json");
    REQUIRE(r);
    CHECK_MESSAGE(r->status == 400, body);
  }
  auto invalid =
      http.Post("/api/jobs", auth, json({{"spec_yaml", "job: {}\n"}}).dump(), "application/json");
  REQUIRE(invalid);
  CHECK(invalid->status == 400);
  CHECK(invalid->body.find("job.name") != std::string::npos);
  CHECK(http.Post("/api/jobs/nojob-1/cancel", "", "application/json")->status == 401);
  CHECK(http.Get("/api/jobs/nojob-1")->status == 404);

  auto submitted = http.Post("/api/jobs", auth, good, "application/json");
  REQUIRE(submitted);
  REQUIRE_MESSAGE(submitted->status == 200, submitted->body);
  const std::string job = json::parse(submitted->body)["job_id"];
  REQUIRE(WaitFor(
      [&] {
        auto r = http.Get("/api/jobs/" + job);
        return r && r->status == 200 && json::parse(r->body)["phase"] == "SUCCEEDED";
      },
      120));
  auto metrics = http.Get("/api/jobs/" + job + "/metrics?since=10");
  REQUIRE(metrics);
  CHECK(json::parse(metrics->body)["metrics"].size() == 10);
  CHECK(http.Get("/api/jobs/" + job + "/metrics?since=ten")->status == 400);
  CHECK(http.Get("/api/jobs/" + job + "/metrics?limit=-1")->status == 400);
  auto layers = http.Get("/api/jobs/" + job + "/expert-load");
  REQUIRE(layers);
  const json layer_list = json::parse(layers->body)["layers"];
  REQUIRE(!layer_list.empty());
  auto load = http.Get("/api/jobs/" + job +
                       "/expert-load?layer=" + layer_list[0].get<std::string>() + "&since=15");
  REQUIRE(load);
  CHECK(json::parse(load->body)["steps"] == json::array({16, 17, 18, 19, 20}));
  auto no_layer = http.Get("/api/jobs/" + job + "/expert-load?layer=99");
  REQUIRE(no_layer);
  CHECK(no_layer->status == 400);
  CHECK(no_layer->body.find("its layers") != std::string::npos);
  auto events = http.Get("/api/jobs/" + job + "/events");
  REQUIRE(events);
  CHECK(json::parse(events->body)["events"].back()["to"] == "SUCCEEDED");
  auto prom = http.Get("/metrics");
  REQUIRE(prom);
  CHECK(prom->status == 200);
  CHECK(prom->body.find("moerun_job_step{job=\"" + job + "\"} 20") != std::string::npos);
  CHECK(prom->body.find("moerun_job_state{job=\"" + job + "\",state=\"SUCCEEDED\"} 1") !=
        std::string::npos);
  CHECK(prom->body.find("moerun_worker_up{worker=\"w0\"") != std::string::npos);
  auto jobs = http.Get("/api/jobs");
  REQUIRE(jobs);
  CHECK(json::parse(jobs->body)["jobs"].back()["job_id"] == job);
  auto workers = http.Get("/api/workers");
  REQUIRE(workers);
  CHECK(json::parse(workers->body)["workers"][0]["health"] == "ok");

  // The dashboard: the page, its script and the embedded charting library with its licences.
  auto page = http.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type").rfind("text/html", 0) == 0);
  CHECK(page->body.find("/vendor/echarts.min.js") != std::string::npos);
  CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'self'") !=
        std::string::npos);
  auto script = http.Get("/dashboard.js");
  REQUIRE(script);
  CHECK(script->body.find("/api/jobs/") != std::string::npos);
  auto library = http.Get("/vendor/echarts.min.js");
  REQUIRE(library);
  CHECK(library->status == 200);
  auto licences = http.Get("/vendor/LICENSES.txt");
  REQUIRE(licences);
  if (library->body.size() > 100000) {  // built with the library (npm or MOERUN_ECHARTS_DIR)
    CHECK(licences->body.find("Apache License") != std::string::npos);
    CHECK(licences->body.find("zrender/LICENSE") != std::string::npos);
  }
  CHECK(http.Get("/dashboardXjs")->status == 404);  // a dot in a path is a dot
}

TEST_CASE("moerun local trains to the same checkpoint digest as moerun launch") {
  const std::string dir = FreshTempPath("control", "local", true);
  const std::string spec = std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml";
  Output local = RunMoerun("local " + spec + " --run-dir " + dir + "/local --workers 2");
  REQUIRE_MESSAGE(local.exit_code == 0, local.err);
  CHECK(local.out.find("SUCCEEDED") != std::string::npos);
  CHECK(local.out.find("0 restart(s)") != std::string::npos);
  Output launch =
      RunMoerun("launch --nproc 4 " + spec + " --run-dir " + dir + "/launch --no-progress");
  REQUIRE_MESSAGE(launch.exit_code == 0, launch.err);
  Output a = RunMoerun("checkpoint digest --run-dir " + dir + "/local");
  Output b = RunMoerun("checkpoint digest --run-dir " + dir + "/launch");
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  // Again: the run is complete, so the job succeeds at once with the same weights.
  Output again = RunMoerun("local " + spec + " --run-dir " + dir + "/local --workers 2");
  CHECK(again.exit_code == 0);
  CHECK(RunMoerun("checkpoint digest --run-dir " + dir + "/local").out == a.out);
}

}  // namespace
// systemd's notify protocol (scripts/systemd/*.service: Type=notify, WatchdogSec=): a
// datagram socket stands in for systemd, as $NOTIFY_SOCKET; the coordinator must say READY=1
// once it listens and then WATCHDOG=1 at least every half WATCHDOG_USEC.
TEST_CASE("under systemd's notify protocol the coordinator says READY and pings its watchdog") {
  const std::string dir = FreshTempPath("control", "sd-notify", true);
  const std::string sock_path = dir + "/notify.sock";
  const int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(sock >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path.c_str());
  REQUIRE(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  timeval wait{0, 200'000};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  setenv("NOTIFY_SOCKET", sock_path.c_str(), 1);
  setenv("WATCHDOG_USEC", "400000", 1);  // a ping at least every 0.2 s
  const pid_t coordinator =
      SpawnLogged(BinDir() + "/moerun-coordinator",
                  {"--state-dir", dir + "/coordinator", "--bind",
                   "ipc://@moerun-test-" + std::to_string(getpid()) + "-sd", "--http", "off"},
                  dir + "/coordinator.out");
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  std::vector<std::string> got;
  int pings = 0;
  REQUIRE(WaitFor(
      [&] {
        char buf[512];
        const ssize_t n = recv(sock, buf, sizeof buf - 1, 0);
        if (n > 0) {
          got.emplace_back(buf, size_t(n));
          pings += got.back() == "WATCHDOG=1";
        }
        return pings >= 3;
      },
      20));
  CHECK(got.front().rfind("READY=1\nSTATUS=listening on ", 0) == 0);
  Terminate(coordinator);
  close(sock);
}

}  // namespace moerun::testing
