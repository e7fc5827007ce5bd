// Fuzz target for the coordinator's HTTP request path: any bytes sent on a connection to the
// HTTP API (coordinator/http/http_api.h over GuardedServer) get answers or a closed connection,
// never a crash, a hang or unbounded memory; every answer is HTTP with a JSON body. The bytes
// go through a socketpair to the same code an accepted connection runs; a thread stands in
// for the coordinator's loop and answers every request it is handed.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "coordinator/http/http_api.h"

namespace {

constexpr const char* kToken = "fuzz-token";

struct Loop {
  Loop() : api(moerun::coordinator::HttpApi::Unbound(kToken)) {
    thread = std::thread([this] {
      while (!stop.load()) {
        for (auto& [peer, e] : api->TakeRequests()) {
          moerun::Envelope reply{moerun::MessageType::kReply,
                                 0,
                                 e.job_id,
                                 "coordinator",
                                 {{"jobs", nlohmann::json::array()}}};
          api->Deliver(peer, reply);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  ~Loop() {
    stop = true;
    thread.join();
  }
  std::unique_ptr<moerun::coordinator::HttpApi> api;
  std::atomic<bool> stop{false};
  std::thread thread;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Loop loop;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  // The input, with the token spliced in where it says @TOKEN@, so authorized paths are
  // reached too.
  std::string input(reinterpret_cast<const char*>(data), size);
  for (size_t at; (at = input.find("@TOKEN@")) != std::string::npos;) input.replace(at, 7, kToken);
  std::thread client([&] {
    size_t sent = 0;
    while (sent < input.size()) {
      const ssize_t n = send(fds[1], input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += size_t(n);
    }
    shutdown(fds[1], SHUT_WR);
  });
  std::string answers;
  std::thread reader([&] {
    char buf[4096];
    for (ssize_t n; (n = recv(fds[1], buf, sizeof buf, 0)) > 0;) answers.append(buf, size_t(n));
  });
  loop.api->ServeConnection(fds[0]);  // closes fds[0]
  client.join();
  reader.join();
  close(fds[1]);
  // Every answer is HTTP/1.1 with a status line.
  if (!answers.empty() && answers.rfind("HTTP/1.1 ", 0) != 0) std::abort();
  return 0;
}
