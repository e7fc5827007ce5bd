// Hostile and careless clients against a live coordinator (issue 19's table), each replayed
// while a job trains: the coordinator stays up and answers, the job keeps training, and each
// case gets a clear answer. Sizes are bounded so that a regression cannot exhaust the machine:
// the coordinator runs under a memory limit (RLIMIT_DATA via prlimit) and bodies are streamed
// from memory in chunks, never held whole.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "common/limits.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"

namespace moerun::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The coordinator's peak resident memory (VmHWM), bytes.
uint64_t PeakRss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// A TCP connection to 127.0.0.1:port from the loopback address `from` (127.0.0.2, ...), so
// that one test plays several clients.
int Connect(int port, const std::string& from) {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(s >= 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(uint16_t(port));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  REQUIRE(connect(s, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  return s;
}

// Sends `head`, then zeros (up to `body_bytes`) while nothing comes back; returns what came
// back (the response, or "" if the connection ended first or `seconds` passed) and the body
// bytes sent in *sent.
std::string SendUntilAnswered(int s, const std::string& head, uint64_t body_bytes, double seconds,
                              uint64_t* sent) {
  REQUIRE(send(s, head.data(), head.size(), MSG_NOSIGNAL) == ssize_t(head.size()));
  static const std::string zeros(1 << 16, '\0');
  *sent = 0;
  std::string got;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    pollfd p{s, short(POLLIN | (*sent < body_bytes ? POLLOUT : 0)), 0};
    if (poll(&p, 1, 50) <= 0) continue;
    if (p.revents & POLLIN) {
      char buf[4096];
      const ssize_t n = recv(s, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, size_t(n));
      if (got.find("\r\n\r\n") != std::string::npos && got.find('}') != std::string::npos) break;
      continue;
    }
    if (p.revents & POLLOUT) {
      // Never blocked in a send: a client that reads while it sends sees an early answer.
      const ssize_t n =
          send(s, zeros.data(), size_t(std::min<uint64_t>(zeros.size(), body_bytes - *sent)),
               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN) continue;
      if (n <= 0) break;
      *sent += uint64_t(n);
    }
    if (p.revents & (POLLHUP | POLLERR)) break;
  }
  return got;
}

// The status code of a raw response ("HTTP/1.1 401 ..."), or 0.
int StatusOf(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0;
}

// The JSON body of a raw response.
json BodyOf(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  json body =
      at == std::string::npos ? json() : json::parse(response.substr(at + 4), nullptr, false);
  return body.is_object() ? body : json::object();
}

// A coordinator under a memory limit with one daemon and a job training on it.
struct LiveCoordinator {
  LiveCoordinator() : c("hostile", {}, /*coordinator_data_limit_bytes=*/uint64_t(3) << 30) {
    c.StartWorker("w0", 2);
    c.WaitForWorkers(1);
    job = c.Submit(c.SmallSpec("training"), "--steps 100000");
    REQUIRE(WaitFor([&] { return c.Job(job).value("step", 0) >= 2; }, 60));
    std::string url;
    std::ifstream(c.coordinator_dir() + "/http_endpoint") >> url;
    std::ifstream(c.coordinator_dir() + "/http.token") >> token;
    port = std::stoi(url.substr(url.rfind(':') + 1));
  }
  // GET /api/status from 127.0.0.1 answers, within 1 s.
  bool Answers() const {
    httplib::Client http("127.0.0.1", port);
    http.set_connection_timeout(1);
    http.set_read_timeout(1);
    auto r = http.Get("/api/status");
    return r && r->status == 200;
  }
  // The job trained at least one more step within 60 s.
  bool KeepsTraining() const {
    const int64_t now = c.Job(job).value("step", 0);
    return WaitFor([&] { return c.Job(job).value("step", 0) > now; }, 60);
  }

  Cluster c;
  std::string job, token;
  int port = 0;
};

TEST_CASE("HTTP: anonymous 1 GiB uploads are refused from their headers, none read whole") {
  LiveCoordinator live;
  std::vector<std::thread> uploads;
  std::vector<std::string> answers(4);
  std::vector<uint64_t> sent(4);
  for (int i = 0; i < 4; ++i) {
    uploads.emplace_back([&, i] {
      const int s = Connect(live.port, "127.0.0." + std::to_string(2 + i));
      answers[size_t(i)] = SendUntilAnswered(
          s,
          "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          "Content-Length: 1073741824\r\n\r\n",
          uint64_t(1) << 30, 20, &sent[size_t(i)]);
      close(s);
    });
  }
  for (auto& t : uploads) t.join();
  for (size_t i = 0; i < 4; ++i) {
    INFO("upload " << i << " sent " << sent[i] << " bytes; got: " << answers[i].substr(0, 300));
    CHECK(StatusOf(answers[i]) == 401);
    CHECK(BodyOf(answers[i]).value("error", "").find("Bearer") != std::string::npos);
    CHECK(sent[i] < (uint64_t(64) << 20));  // cut off long before 1 GiB
  }
  // With the token, an over-long declared body is refused from its headers too.
  const int s = Connect(live.port, "127.0.0.6");
  uint64_t big_sent = 0;
  const std::string big =
      SendUntilAnswered(s,
                        "POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                            live.token + "\r\nContent-Length: 1073741824\r\n\r\n",
                        uint64_t(1) << 30, 20, &big_sent);
  close(s);
  CHECK(StatusOf(big) == 413);
  CHECK(BodyOf(big).value("error", "").find("at most") != std::string::npos);
  CHECK(Alive(live.c.coordinator()));
  CHECK(PeakRss(live.c.coordinator()) < (uint64_t(300) << 20));
  CHECK(live.Answers());
  CHECK(live.KeepsTraining());
}

TEST_CASE("HTTP: idle and trickling connections do not starve the API") {
  LiveCoordinator live;
  std::vector<int> idle, trickling;
  for (int i = 0; i < 8; ++i) idle.push_back(Connect(live.port, "127.0.0.2"));
  std::string refused;
  for (int i = 0; i < 64; ++i) {
    const int s = Connect(live.port, "127.0.0.3");
    trickling.push_back(s);
    send(s, "G", 1, MSG_NOSIGNAL);
  }
  // One client's connections past the limit are answered at once with the reason (waited for
  // up to 5 s, as the coordinator's threads start).
  std::vector<bool> answered(trickling.size(), false);
  int refusals = 0, closed_silently = 0;
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (refusals < 64 - kMaxHttpConnectionsPerClient && Clock::now() < until) {
    for (size_t i = 0; i < trickling.size(); ++i) {
      pollfd p{trickling[i], POLLIN, 0};
      if (answered[i] || poll(&p, 1, 0) <= 0) continue;
      char buf[1024];
      const ssize_t n = recv(trickling[i], buf, sizeof buf, 0);
      answered[i] = true;
      if (n > 0) {
        refused.assign(buf, size_t(n));
        ++refusals;
      } else {
        ++closed_silently;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO(closed_silently << " connections closed without an answer");
  CHECK(refusals == 64 - kMaxHttpConnectionsPerClient);
  CHECK(StatusOf(refused) == 429);
  CHECK(BodyOf(refused).value("error", "").find("127.0.0.3") != std::string::npos);
  for (int round = 0; round < 5; ++round) {  // ~1 s of trickling while others are served
    for (int s : trickling) send(s, "E", 1, MSG_NOSIGNAL);
    CHECK(live.Answers());
  }
  for (int s : idle) close(s);
  for (int s : trickling) close(s);
  CHECK(live.KeepsTraining());
}

TEST_CASE("HTTP: every error is JSON; no body where none is needed; any Content-Type") {
  LiveCoordinator live;
  httplib::Client http("127.0.0.1", live.port);
  const httplib::Headers auth = {{"Authorization", "Bearer " + live.token}};
  // curl -X POST .../cancel with no body: the coordinator's answer, not an empty 400.
  auto cancel = http.Post("/api/jobs/nojob-1/cancel", auth, "", "");
  REQUIRE(cancel);
  CHECK(cancel->status == 404);
  CHECK(json::parse(cancel->body).value("error", "").find("no job") != std::string::npos);
  // curl -d @spec.json sends a form's Content-Type; a spec over 8 KB is still read.
  std::string yaml = ReadAll(live.c.SmallSpec("viaform"));
  while (yaml.size() < 20000) yaml += "# padding to pass 8 KB\n";
  auto form = http.Post("/api/jobs", auth, json({{"spec_yaml", yaml}}).dump(),
                        "application/x-www-form-urlencoded");
  REQUIRE(form);
  CHECK_MESSAGE(form->status == 200, form->body);
  auto empty = http.Post("/api/jobs", auth, "", "application/json");
  REQUIRE(empty);
  CHECK(empty->status == 400);
  CHECK(json::parse(empty->body).value("error", "").find("empty") != std::string::npos);
  auto missing = http.Get("/api/nothing-here");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body).value("error", "").find("/api/nothing-here") !=
        std::string::npos);
  auto anonymous = http.Post("/api/jobs/" + live.job + "/cancel", "", "");
  REQUIRE(anonymous);
  CHECK(anonymous->status == 401);
  CHECK(json::parse(anonymous->body).contains("error"));
  CHECK(live.c.Phase(live.job) == "RUNNING");  // the anonymous cancel changed nothing
  CHECK(live.KeepsTraining());
}

TEST_CASE("specs: aliases that expand past the limits are refused in milliseconds, by name") {
  LiveCoordinator live;
  httplib::Client http("127.0.0.1", live.port);
  http.set_read_timeout(5);
  const httplib::Headers auth = {{"Authorization", "Bearer " + live.token}};
  // issue 19's 119 KB spec: one long string aliased 5,000 times in data.exclude.
  std::string yaml = ReadAll(live.c.SmallSpec("aliases"));
  const size_t data = yaml.find("data:\n");
  REQUIRE(data != std::string::npos);
  std::string exclude = "  exclude:\n    - &long \"" + std::string(100000, 'y') + "\"\n";
  for (int i = 0; i < 5000; ++i) exclude += "    - *long\n";
  yaml.insert(data + 6, exclude);
  const auto t0 = Clock::now();
  auto r = http.Post("/api/jobs", auth, json({{"spec_yaml", yaml}}).dump(), "application/json");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK_MESSAGE(json::parse(r->body).value("error", "").find("alias *long expands the spec") !=
                    std::string::npos,
                r->body);
  INFO("refused in " << seconds << " s");
  CHECK(PeakRss(live.c.coordinator()) < (uint64_t(300) << 20));
  // The same file through `moerun validate`: refused, exit 2, naming the alias.
  const std::string path = live.c.dir() + "/aliases-5000.yaml";
  std::ofstream(path) << yaml;
  Output v = RunMoerun("validate " + path);
  CHECK(v.exit_code == 2);
  CHECK(v.err.find("alias *long") != std::string::npos);
  CHECK(live.Answers());
  CHECK(live.KeepsTraining());
}

TEST_CASE("run dirs: system directories, and outside --allowed-run-roots, are refused") {
  LiveCoordinator live;
  const std::string spec = live.c.SmallSpec("rooted");
  Output cron = live.c.Cli("submit " + spec + " --run-dir /etc/cron.d");
  CHECK(cron.exit_code == 2);
  CHECK(cron.err.find("run_dir /etc/cron.d is in /etc, a system directory") != std::string::npos);
  CHECK(live.Answers());
  CHECK(live.KeepsTraining());

  Cluster rooted("roots", {"--allowed-run-roots", "/tmp/moerun-allowed,/srv/runs"});
  const std::string spec2 = rooted.SmallSpec("rooted");
  Output outside = rooted.Cli("submit " + spec2 + " --run-dir /var/tmp/run");
  CHECK(outside.exit_code == 2);
  CHECK(outside.err.find("run_dir /var/tmp/run is outside") != std::string::npos);
  CHECK(outside.err.find("--allowed-run-roots /tmp/moerun-allowed, /srv/runs") !=
        std::string::npos);
  Output escape = rooted.Cli("submit " + spec2 + " --run-dir /tmp/moerun-allowed/../../etc");
  CHECK(escape.exit_code == 2);
  Output inside = rooted.Cli("submit " + spec2 + " --run-dir /tmp/moerun-allowed/run --json");
  CHECK_MESSAGE(inside.exit_code == 0, inside.err);
  std::string ckpt = ReadAll(spec2);
  const size_t at = ckpt.find("checkpoint:\n");
  REQUIRE(at != std::string::npos);
  ckpt.insert(at + 12, "  dir: /etc/ckpt\n");
  const std::string spec3 = rooted.dir() + "/ckpt-outside.yaml";
  std::ofstream(spec3) << ckpt;
  Output bad_ckpt = rooted.Cli("submit " + spec3 + " --run-dir /tmp/moerun-allowed/run2");
  CHECK(bad_ckpt.exit_code == 2);
  CHECK(bad_ckpt.err.find("checkpoint.dir /etc/ckpt is outside") != std::string::npos);
  CHECK(Alive(rooted.coordinator()));
}

TEST_CASE("CLI: usage errors exit 2 and name what to change") {
  LiveCoordinator live;
  Cluster& c = live.c;
  Output unknown = c.Cli("cancel nojob-7");
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("no job nojob-7") != std::string::npos);
  const std::string job = c.Submit(c.SmallSpec("twice"), "--steps 100000");  // queued
  CHECK(c.Cli("cancel " + job).exit_code == 0);
  Output twice = c.Cli("cancel " + job);
  CHECK(twice.exit_code == 2);
  Output rank = c.Cli("logs " + live.job + " --rank 99");
  CHECK(rank.exit_code == 2);
  CHECK(rank.err.find("has ranks 0..1") != std::string::npos);
  Output scheme = RunMoerun("status --coordinator 127.0.0.1:7100 --keys " + c.keys());
  CHECK(scheme.exit_code == 2);
  CHECK(scheme.err.find("write tcp://127.0.0.1:7100") != std::string::npos);
  Output no_keys =
      RunMoerun("status --coordinator " + c.address() + " --keys " + c.dir() + "/none");
  CHECK(no_keys.exit_code == 2);
  CHECK(no_keys.err.find("moerun keygen") != std::string::npos);
  // keygen that fails leaves nothing behind, so the next try works.
  const std::string keys = c.dir() + "/newkeys";
  Output failed = RunMoerun("keygen " + keys + " --coordinator-key /nonexistent");
  CHECK(failed.exit_code == 2);
  CHECK(failed.err.find("/nonexistent cannot be read") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(keys));
  Output again = RunMoerun("keygen " + keys + " --coordinator-key " + c.coordinator_dir() +
                           "/coordinator.key");
  CHECK_MESSAGE(again.exit_code == 0, again.err);
  // moerun local refuses --steps below the warm-up before it starts anything.
  const std::string run = c.dir() + "/local-run";
  Output local = RunMoerun("local " + std::string(MOERUN_SOURCE_DIR) +
                           "/configs/tiny-cpu.yaml --steps 5 --run-dir " + run);
  CHECK(local.exit_code == 2);
  CHECK(local.err.find("warmup_steps") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(run + "/control"));
  CHECK(live.Answers());
  CHECK(live.KeepsTraining());
}

TEST_CASE("daemons: a duplicate id is refused and exits; a dead one can be removed") {
  LiveCoordinator live;  // its daemon w0 trains the job
  Cluster& c = live.c;
  // A second daemon on another state dir with the same id: refused, says why, exits 2.
  const pid_t second = c.StartWorker("w0", 2, "", "w0-second");
  int status = 0;
  REQUIRE(WaitFor([&] { return waitpid(second, &status, WNOHANG) == second; }, 20));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  const std::string said = ReadAll(c.dir() + "/w0-second.out");
  CHECK_MESSAGE(said.find("worker id w0 is in use by the daemon at") != std::string::npos, said);
  CHECK(c.Status()["workers"].size() == 1);
  // The same state dir twice: refused at once by its lock.
  const pid_t same = c.StartWorker("w0", 2, "", "w0");
  REQUIRE(WaitFor([&] { return waitpid(same, &status, WNOHANG) == same; }, 20));
  CHECK(WEXITSTATUS(status) == 2);
  // A daemon with a key the coordinator does not know says so in its log.
  const std::string stranger = c.dir() + "/stranger-keys";
  REQUIRE(RunMoerun("keygen " + stranger + " --coordinator-key " + c.coordinator_dir() +
                    "/coordinator.key")
              .exit_code == 0);
  c.StartWorker("stranger", 1, stranger);
  REQUIRE(WaitFor(
      [&] {
        return ReadAll(c.dir() + "/stranger.out").find("refused this daemon's key") !=
               std::string::npos;
      },
      20));
  // A daemon that will not return: refused while alive, removed once dead.
  const pid_t vm = c.StartWorker("vm", 1);
  c.WaitForWorkers(2);
  Output alive = c.Cli("worker remove vm");
  CHECK(alive.exit_code == 2);
  CHECK(alive.err.find("is alive") != std::string::npos);
  kill(vm, SIGKILL);
  waitpid(vm, &status, 0);
  auto vm_alive = [&] {
    const json status = c.Status();  // held: a loop over a temporary's member dangles
    for (const auto& w : status["workers"])
      if (w.value("worker", "") == "vm") return w.value("alive", true);
    return false;
  };
  REQUIRE(WaitFor([&] { return !vm_alive(); }, 20));
  Output removed = c.Cli("worker remove vm");
  CHECK_MESSAGE(removed.exit_code == 0, removed.err);
  CHECK(c.Status()["workers"].size() == 1);         // w0 only
  CHECK(c.Cli("worker remove vm").exit_code == 2);  // no such worker now
  CHECK(live.Answers());
  CHECK(live.KeepsTraining());
}

// The security mechanism a ZeroMQ endpoint offers, read from its ZMTP 3 greeting: 10 bytes of
// signature, 2 of version, then the mechanism's name padded to 20 bytes.
std::string ZmtpMechanism(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  const int s = Connect(std::stoi(endpoint.substr(colon + 1)), "127.0.0.9");
  // The start of a ZMTP 3 greeting (signature, major version) and no mechanism, so the server
  // sends all of its greeting and has nothing of ours to refuse yet.
  std::string greeting(11, '\0');
  greeting[0] = '\xff';
  greeting[9] = '\x7f';
  greeting[10] = 3;
  send(s, greeting.data(), greeting.size(), MSG_NOSIGNAL);
  std::string got;
  const auto end = Clock::now() + std::chrono::seconds(5);
  while (got.size() < 32 && Clock::now() < end) {
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[64];
    const ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, size_t(n));
  }
  close(s);
  if (got.size() < 32) return "";
  return std::string(got.c_str() + 12);  // NUL-padded
}

TEST_CASE("data plane: daemon-started trainers speak CURVE with their generation's key") {
  LiveCoordinator live;
  const std::string log = ReadAll(live.c.dir() + "/w0/logs/" + live.job + "/rank-0.log");
  std::smatch m;
  REQUIRE(std::regex_search(log, m, std::regex(R"(this one at (tcp://[0-9.]+:\d+))")));
  CHECK(ZmtpMechanism(m[1]) == "CURVE");  // a plain client's frames never reach the trainer
  // The key reached each trainer in a 0600 file, which the trainer removed once read.
  const std::string trainers = live.c.dir() + "/w0/trainers";
  for (const auto& f : std::filesystem::directory_iterator(trainers))
    CHECK(f.path().extension() != ".key");
  CHECK(live.KeepsTraining());
}

TEST_CASE("data plane: --insecure-data-plane keeps plain sockets, for a trusted fabric") {
  Cluster c("insecure", {"--insecure-data-plane"});
  c.StartWorker("w0", 2);
  c.WaitForWorkers(1);
  const std::string job = c.Submit(c.SmallSpec("plain"), "--steps 100000");
  REQUIRE(WaitFor([&] { return c.Job(job).value("step", 0) >= 2; }, 60));
  const std::string log = ReadAll(c.dir() + "/w0/logs/" + job + "/rank-0.log");
  std::smatch m;
  REQUIRE(std::regex_search(log, m, std::regex(R"(this one at (tcp://[0-9.]+:\d+))")));
  CHECK(ZmtpMechanism(m[1]) == "NULL");
}

}  // namespace
}  // namespace moerun::testing
