#include "coordinator/http/guarded_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/limits.h"
#include "common/timeouts.h"
#include "coordinator/http/request_budget.h"

namespace moerun::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

// A pool that starts a thread whenever a task would otherwise wait, up to `max_threads`.
class GrowingThreadPool : public httplib::TaskQueue {
 public:
  explicit GrowingThreadPool(size_t max_threads) : max_(max_threads) {}
  ~GrowingThreadPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > idle_ && threads_.size() < max_) threads_.emplace_back([this] { Work(); });
    ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      ++idle_;
      ready_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // stopping, nothing left
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const size_t max_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stop_ = false;
};

// Milliseconds from now to `deadline`, at least 0.
int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return int(std::max<int64_t>(0, left.count()));
}

// Waits for `events` on `sock` until `deadline`, or until `server` stops (checked every
// kHttpStopPollMs).
bool Wait(const GuardedServer* server, int sock, short events, Clock::time_point deadline) {
  while (server == nullptr || !server->stopping()) {
    pollfd p{sock, events, 0};
    const int left = RemainingMs(deadline);
    const int n = poll(&p, 1, std::min<int>(left, int(kHttpStopPollMs)));
    if (n > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
    if (n < 0 && errno != EINTR) return false;
    if (n == 0 && left <= kHttpStopPollMs) return false;
  }
  return false;
}

std::string Address(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
  }
  return buf;
}

int Port(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

// The socket's address from getpeername or getsockname, as text and port.
void Name(int (*get)(int, sockaddr*, socklen_t*), int sock, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (get(sock, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
  ip = Address(a);
  port = Port(a);
}

// One connection's socket as cpp-httplib reads it: buffered, every read bounded by the
// request's deadline and budget.
class DeadlineStream : public httplib::Stream {
 public:
  // server: whose stop ends every wait; null: no stop to watch.
  DeadlineStream(const GuardedServer* server, int sock) : server_(server), sock_(sock) {}

  // The next request began (its first byte is readable): a fresh deadline and budget.
  void StartRequest() {
    deadline_ = Clock::now() + std::chrono::milliseconds(kHttpRequestReadTimeoutMs);
    budget_.Start();
  }
  // Whether a request begins within `ms`: a byte buffered or readable.
  bool AwaitRequest(int64_t ms) {
    return begin_ < end_ ||
           Wait(server_, sock_, POLLIN, Clock::now() + std::chrono::milliseconds(ms));
  }

  bool is_readable() const override {
    return begin_ < end_ || Wait(server_, sock_, POLLIN, deadline_);
  }
  bool is_writable() const override {
    return Wait(server_, sock_, POLLOUT,
                Clock::now() + std::chrono::milliseconds(kHttpWriteTimeoutMs));
  }
  ssize_t read(char* out, size_t size) override {
    if (size == 0) return 0;
    if (begin_ == end_) {
      if (!Wait(server_, sock_, POLLIN, deadline_)) return -1;
      ssize_t n;
      do {
        n = recv(sock_, buf_, sizeof buf_, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = size_t(n);
    }
    const size_t n = std::min(size, end_ - begin_);
    if (!budget_.Take(buf_ + begin_, n)) return -1;
    std::copy(buf_ + begin_, buf_ + begin_ + n, out);
    begin_ += n;
    return ssize_t(n);
  }
  ssize_t write(const char* data, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = send(sock_, data, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Name(getpeername, sock_, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Name(getsockname, sock_, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  const GuardedServer* server_;
  int sock_;
  Clock::time_point deadline_ = Clock::now();
  RequestBudget budget_;
  char buf_[4096];
  size_t begin_ = 0, end_ = 0;
};

// A refusal before any request was read: one JSON response, then the connection closes.
void Refuse(int sock, int status, const char* reason, const std::string& error) {
  const std::string body = nlohmann::json({{"error", error}}).dump();
  const std::string response =
      "HTTP/1.1 " + std::to_string(status) + " " + reason +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n" + body;
  DeadlineStream out(nullptr, sock);
  size_t sent = 0;
  while (sent < response.size()) {
    const ssize_t n = out.write(response.data() + sent, response.size() - sent);
    if (n <= 0) break;
    sent += size_t(n);
  }
}

// Ends the connection with a FIN, not a reset: reads what the client sent that was never read
// (a refused connection's request, an unread body) for up to kHttpLingerMs and
// kHttpLingerBytes first, since closing with unread bytes sends a reset that can make the
// client drop the answer it was just sent.
void CloseGently(int sock) {
  shutdown(sock, SHUT_WR);
  const auto end = Clock::now() + std::chrono::milliseconds(kHttpLingerMs);
  char scratch[4096];
  for (size_t drained = 0; drained < kHttpLingerBytes;) {
    pollfd p{sock, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(end)) <= 0) break;
    const ssize_t n = recv(sock, scratch, sizeof scratch, 0);
    if (n <= 0) break;
    drained += size_t(n);
  }
  close(sock);
}

}  // namespace

GuardedServer::GuardedServer() : gate_(kMaxHttpConnectionsPerClient, kMaxHttpConnections) {
  // A few threads beyond the gate's total: refusing a connection takes one briefly.
  new_task_queue = [] { return new GrowingThreadPool(size_t(kMaxHttpConnections) + 16); };
}

bool GuardedServer::RaiseBacklog() {
  return svr_sock_ != INVALID_SOCKET && ::listen(svr_sock_, kHttpListenBacklog) == 0;
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  Serve(sock, /*watch_stop=*/true);
  return true;
}

void GuardedServer::Serve(int sock, bool watch_stop) {
  DeadlineStream stream(watch_stop ? this : nullptr, sock);
  std::string client;
  int port = 0;
  stream.get_remote_ip_and_port(client, port);
  const ClientGate::Verdict verdict = gate_.Admit(client);
  if (verdict == ClientGate::Verdict::kClientFull) {
    Refuse(sock, 429, "Too Many Requests",
           client + " has " + std::to_string(kMaxHttpConnectionsPerClient) +
               " connections open to this coordinator, the most one client may: close some");
  } else if (verdict == ClientGate::Verdict::kServerFull) {
    Refuse(sock, 503, "Service Unavailable",
           "the coordinator has " + std::to_string(kMaxHttpConnections) +
               " HTTP connections open, the most it serves: try again");
  } else {
    // cpp-httplib's keep-alive loop, with this stream's limits.
    for (size_t left = std::max<size_t>(1, keep_alive_max_count_); left > 0; --left) {
      if (!stream.AwaitRequest(kHttpIdleTimeoutMs)) break;
      stream.StartRequest();
      bool closed = false;
      if (!process_request(stream, left == 1, closed, nullptr) || closed) break;
    }
    gate_.Release(client);
  }
  CloseGently(sock);
}

}  // namespace moerun::coordinator
