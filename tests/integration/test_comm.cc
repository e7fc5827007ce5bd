// The ZeroMQ data plane with real processes: every collective's result, uneven and empty
// all-to-all splits, groups, a killed peer and Abort(). Each test forks one process per rank.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>
#include <thread>

#include "common/curve_auth.h"
#include "worker/comm/zmq_communicator.h"

using moerun::Status;
using moerun::comm::Communicator;
using moerun::comm::DataPlaneKey;
using moerun::comm::ZmqCommunicator;
using Clock = std::chrono::steady_clock;

namespace {

// A rank's body returns "" on success or what went wrong.
using RankBody = std::function<std::string(ZmqCommunicator&)>;

std::vector<std::string> Endpoints(int world, const std::string& name) {
  std::vector<std::string> e;
  for (int r = 0; r < world; ++r)
    e.push_back("ipc://@moerun-test-" + std::to_string(getpid()) + "-" + name + "-" +
                std::to_string(r));
  return e;
}

// Runs `body` in `world` child processes; returns each child's exit status (0 = success,
// -SIG when killed). Children that do not finish within `limit` are killed.
// keys[r]: rank r's data-plane key (none: plain sockets); empty: none for every rank.
std::vector<int> RunRanks(int world, const std::string& name, int64_t timeout_ms,
                          const RankBody& body,
                          std::chrono::seconds limit = std::chrono::seconds(60),
                          std::vector<std::optional<DataPlaneKey>> keys = {}) {
  const auto endpoints = Endpoints(world, name);
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      // A group of its own whose parent (this test) is outside it, so it is never orphaned:
      // the kernel sends an orphaned group's stopped members SIGHUP, which would end the
      // SIGSTOPped rank below before this test kills it.
      setpgid(0, 0);
      auto comm = ZmqCommunicator::Create(r, endpoints, timeout_ms,
                                          keys.empty() ? std::nullopt : keys[size_t(r)]);
      if (!comm.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", r, comm.status().ToString().c_str());
        _exit(2);
      }
      const std::string err = body(*comm.value());
      if (!err.empty()) std::fprintf(stderr, "rank %d (%s): %s\n", r, name.c_str(), err.c_str());
      comm.value().reset();
      _exit(err.empty() ? 0 : 1);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(size_t(world), -999);
  const auto end = Clock::now() + limit;
  for (int r = 0; r < world; ++r) {
    int status = 0;
    while (waitpid(pids[size_t(r)], &status, WNOHANG) == 0) {
      if (Clock::now() > end) kill(pids[size_t(r)], SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    codes[size_t(r)] = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  return codes;
}

std::string Check(bool ok, const std::string& what) { return ok ? "" : what; }

}  // namespace

TEST_CASE("all-reduce sums exactly, for any world and count") {
  for (int world : {1, 2, 3, 4}) {
    for (size_t count : {size_t(0), size_t(1), size_t(7), size_t(100003)}) {
      CAPTURE(world);
      CAPTURE(count);
      auto codes = RunRanks(world, "ar" + std::to_string(world) + "_" + std::to_string(count),
                            10000, [&](ZmqCommunicator& c) {
                              std::vector<float> v(count);
                              for (size_t i = 0; i < count; ++i)
                                v[i] = float((c.rank() + 1) * (i % 13));
                              Status s = c.AllReduceSum(v.data(), count);
                              if (!s.ok()) return s.ToString();
                              const float ranks_sum = float(world * (world + 1) / 2);
                              for (size_t i = 0; i < count; ++i)
                                if (v[i] != ranks_sum * float(i % 13))
                                  return std::string("wrong sum at ") + std::to_string(i);
                              return std::string();
                            });
      for (int c : codes) CHECK(c == 0);
    }
  }
}

TEST_CASE("all-reduce of arbitrary floats is bitwise identical on every rank and every run") {
  const std::string out = "/tmp/moerun_comm_det_" + std::to_string(getpid());
  for (int run = 0; run < 2; ++run) {
    auto codes = RunRanks(3, "det" + std::to_string(run), 10000, [&](ZmqCommunicator& c) {
      std::vector<float> v(5001);
      uint32_t x = 12345u + uint32_t(c.rank());
      for (auto& f : v) {
        x = x * 1664525u + 1013904223u;
        f = float(x) / 4e9f - 0.5f;
      }
      Status s = c.AllReduceSum(v.data(), v.size());
      if (!s.ok()) return s.ToString();
      FILE* f = std::fopen(
          (out + "_" + std::to_string(run) + "_" + std::to_string(c.rank())).c_str(), "wb");
      std::fwrite(v.data(), 4, v.size(), f);
      std::fclose(f);
      return std::string();
    });
    for (int c : codes) CHECK(c == 0);
  }
  auto read = [&](int run, int rank) {
    FILE* f =
        std::fopen((out + "_" + std::to_string(run) + "_" + std::to_string(rank)).c_str(), "rb");
    std::vector<float> v(5001);
    REQUIRE(f != nullptr);
    REQUIRE(std::fread(v.data(), 4, v.size(), f) == v.size());
    std::fclose(f);
    return v;
  };
  const auto ref = read(0, 0);
  for (int run = 0; run < 2; ++run)
    for (int r = 0; r < 3; ++r) {
      CHECK(std::memcmp(read(run, r).data(), ref.data(), ref.size() * 4) == 0);
      std::remove((out + "_" + std::to_string(run) + "_" + std::to_string(r)).c_str());
    }
}

TEST_CASE("all-to-all-v with uneven, zero and very large splits") {
  const int world = 4;
  // Member i sends to member j bytes(i, j); the payload encodes (i, j, index).
  auto bytes = [](int i, int j) -> size_t {
    if (i == 3) return j == 0 ? size_t(4) << 20 : 0;  // one member sends everything to one peer
    return size_t(((i + 2 * j) % 3) * 1000);          // zero for some pairs
  };
  auto codes = RunRanks(world, "a2a", 10000, [&](ZmqCommunicator& c) {
    const int me = c.rank();
    std::vector<size_t> sb(world), rb(world);
    for (int j = 0; j < world; ++j) sb[size_t(j)] = bytes(me, j), rb[size_t(j)] = bytes(j, me);
    std::vector<uint8_t> send(std::accumulate(sb.begin(), sb.end(), size_t(0)));
    std::vector<uint8_t> recv(std::accumulate(rb.begin(), rb.end(), size_t(0)));
    size_t o = 0;
    for (int j = 0; j < world; ++j)
      for (size_t k = 0; k < sb[size_t(j)]; ++k) send[o++] = uint8_t(me * 31 + j * 7 + k);
    for (int round = 0; round < 3; ++round) {
      Status s = c.AllToAllV(send.data(), sb, recv.data(), rb);
      if (!s.ok()) return s.ToString();
      o = 0;
      for (int i = 0; i < world; ++i)
        for (size_t k = 0; k < rb[size_t(i)]; ++k)
          if (recv[o++] != uint8_t(i * 31 + me * 7 + k))
            return std::string("bad byte from ") + std::to_string(i);
    }
    return std::string();
  });
  for (int c : codes) CHECK(c == 0);
}

TEST_CASE("broadcast, barrier, point-to-point and interleaved groups") {
  auto codes = RunRanks(4, "groups", 10000, [](ZmqCommunicator& c) {
    std::vector<double> b(1000, c.rank() == 2 ? 3.25 : 0.0);
    Status s = c.Broadcast(2, b.data(), b.size() * sizeof(double));
    if (!s.ok() || b[999] != 3.25) return std::string("broadcast: ") + s.ToString();
    if (!(s = c.Barrier()).ok()) return s.ToString();
    // Even and odd members form groups; each group's all-reduce interleaves with the other's.
    const bool even = c.rank() % 2 == 0;
    auto g = c.Split(even ? std::vector<int>{0, 2} : std::vector<int>{1, 3}, "parity");
    if (!g.ok()) return g.status().ToString();
    for (int k = 0; k < 5; ++k) {
      float v = float(c.rank());
      if (!(s = g.value()->AllReduceSum(&v, 1)).ok()) return s.ToString();
      if (v != (even ? 2.0f : 4.0f)) return std::string("group sum ") + std::to_string(v);
      float w = 1.0f;
      if (!(s = c.AllReduceSum(&w, 1)).ok() || w != 4.0f) return std::string("world sum");
    }
    // A ring of point-to-point messages.
    int token = c.rank(), got = -1;
    if (!(s = c.Send((c.rank() + 1) % 4, 9, &token, sizeof token)).ok()) return s.ToString();
    if (!(s = c.Recv((c.rank() + 3) % 4, 9, &got, sizeof got)).ok()) return s.ToString();
    return Check(got == (c.rank() + 3) % 4, "p2p");
  });
  for (int c : codes) CHECK(c == 0);
}

TEST_CASE("a killed peer becomes a timeout on every other rank, within the timeout") {
  const int64_t timeout_ms = 1000;
  auto codes = RunRanks(3, "killed", timeout_ms, [&](ZmqCommunicator& c) {
    if (c.rank() == 2) raise(SIGKILL);  // dies before the collective
    std::vector<float> v(1000, 1.0f);
    const auto t0 = Clock::now();
    Status s = c.AllReduceSum(v.data(), v.size());
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    if (s.code() != Status::Code::kTimedOut) return "expected TimedOut, got " + s.ToString();
    if (s.message().find("for rank") == std::string::npos)
      return "the error does not name the peer: " + s.message();
    return Check(ms >= timeout_ms && ms < timeout_ms + 500,
                 "timed out after " + std::to_string(ms) + " ms");
  });
  CHECK(codes[0] == 0);
  CHECK(codes[1] == 0);
  CHECK(codes[2] == -SIGKILL);
}

TEST_CASE("a frozen (SIGSTOPped) peer becomes a timeout too") {
  const int64_t timeout_ms = 1000;
  const std::string name = "frozen";
  // Rank 1 stops itself; rank 0 must report it within the timeout, then wakes and kills it.
  auto codes = RunRanks(
      2, name, timeout_ms,
      [&](ZmqCommunicator& c) {
        if (c.rank() == 1) {
          raise(SIGSTOP);
          return std::string();  // resumed only to be killed below
        }
        float v = 1.0f;
        const auto t0 = Clock::now();
        Status s = c.AllReduceSum(&v, 1);
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
        if (s.code() != Status::Code::kTimedOut) return "expected TimedOut, got " + s.ToString();
        return Check(ms >= timeout_ms && ms < timeout_ms + 500,
                     "timed out after " + std::to_string(ms) + " ms");
      },
      std::chrono::seconds(3));
  CHECK(codes[0] == 0);
  CHECK(codes[1] == -SIGKILL);  // still stopped when the limit came: RunRanks killed it
}

TEST_CASE("Abort from another thread ends a blocked call promptly") {
  auto codes = RunRanks(2, "abort", 60000, [](ZmqCommunicator& c) {
    if (c.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // never sends
      return std::string();
    }
    std::thread aborter([&c] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      c.Abort("test says stop");
    });
    const auto t0 = Clock::now();
    int x = 0;
    Status s = c.Recv(1, 1, &x, sizeof x);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    aborter.join();
    if (s.code() != Status::Code::kAborted) return "expected Aborted, got " + s.ToString();
    if (s.message().find("test says stop") == std::string::npos) return s.message();
    Status later = c.Barrier();
    if (later.code() != Status::Code::kAborted) return std::string("a later call was not aborted");
    return Check(ms < 200 + 200, "abort took " + std::to_string(ms) + " ms");
  });
  for (int c : codes) CHECK(c == 0);
}

namespace {

DataPlaneKey NewKey() {
  auto pair = moerun::GenerateCurveKeyPair();
  REQUIRE(pair.ok());
  return {pair->public_key, pair->secret_key};
}

}  // namespace

TEST_CASE("CURVE data plane: ranks holding the generation's key all-reduce exactly") {
  const DataPlaneKey key = NewKey();
  const auto codes = RunRanks(3, "curve", 10000,
                              [](ZmqCommunicator& c) {
                                std::vector<float> v(100000, float(c.rank() + 1));
                                Status s = c.AllReduceSum(v.data(), v.size());
                                if (!s.ok()) return s.ToString();
                                return Check(v.front() == 6.0f && v.back() == 6.0f, "wrong sum");
                              },
                              std::chrono::seconds(60), {key, key, key});
  CHECK(codes == std::vector<int>{0, 0, 0});
}

TEST_CASE("CURVE data plane: a rank with another key, or with none, reaches nobody") {
  // Rank 1 sends to rank 0, which waits for it: with a wrong key or plain sockets the
  // handshake fails and nothing arrives, so rank 0 times out.
  for (const bool plain : {false, true}) {
    CAPTURE(plain);
    const auto codes = RunRanks(
        2, plain ? "curve-plain" : "curve-other", 1500,
        [](ZmqCommunicator& c) {
          int v = 7;
          if (c.rank() == 1) {
            Status s = c.Send(0, 1, &v, sizeof v);
            std::this_thread::sleep_for(std::chrono::milliseconds(2000));
            return s.ok() ? std::string() : s.ToString();
          }
          Status s = c.Recv(1, 1, &v, sizeof v);
          return s.code() == Status::Code::kTimedOut ? std::string()
                                                     : "it arrived: " + s.ToString();
        },
        std::chrono::seconds(30),
        {NewKey(), plain ? std::optional<DataPlaneKey>() : std::optional<DataPlaneKey>(NewKey())});
    CHECK(codes == std::vector<int>{0, 0});  // rank 0's Recv timed out: nothing came through
  }
}
