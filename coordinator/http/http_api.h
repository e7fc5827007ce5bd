// HttpApi: the coordinator's HTTP surface (docs/architecture.md §9), on cpp-httplib.
//   GET  /api/status                      jobs, workers, counters
//   GET  /api/jobs, /api/workers          {"jobs": [...]}, {"workers": [...]}: the same lists
//   GET  /api/jobs/<id>                   one job: progress and every rank
//   GET  /api/jobs/<id>/events            state transitions with time and cause
//   GET  /api/jobs/<id>/metrics?since=S&limit=N   per-step reports (scalars) after step S
//   GET  /api/jobs/<id>/expert-load?layer=L&since=S&limit=N   one MoE layer's tokens per
//                                         expert per step; without layer, the layers
//   POST /api/jobs                        submit {"spec_yaml", "run_dir"?, "steps"?, "resume"?}
//   POST /api/jobs/<id>/cancel
//   POST /api/jobs/<id>/stop              {"reason"?}: a last checkpoint, then STOPPED
//   GET  /metrics                         Prometheus text exposition
//   GET  /, /dashboard.js, /dashboard.css, /vendor/...   the dashboard (dashboard_assets.h)
// Writes need "Authorization: Bearer <token>" (401 without it); a body that is not the
// expected JSON is a 400. Every request becomes the envelope a CLI would send, answered by
// the coordinator's own loop (peer "http:<n>"), so HTTP and the control plane never
// disagree. Handlers run on httplib's threads; the loop calls TakeRequests() and Deliver().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/protocol.h"
#include "common/status.h"

namespace httplib {
class Server;
}

namespace moerun::coordinator {

class HttpApi {
 public:
  // Binds host:port (port 0: any free port) and serves on its own thread.
  static Result<std::unique_ptr<HttpApi>> Start(const std::string& host, int port,
                                                std::string token);
  ~HttpApi();
  // The same routes with no socket bound: connections come from ServeConnection() (the fuzz
  // target and tests); requests still wait for TakeRequests()/Deliver().
  static std::unique_ptr<HttpApi> Unbound(std::string token);
  // Serves one connected socket on the calling thread, then closes it.
  void ServeConnection(int sock);

  int port() const { return port_; }
  // The loop's side: requests waiting for the coordinator, and its answers.
  std::vector<std::pair<std::string, Envelope>> TakeRequests();
  bool Deliver(const std::string& peer, const Envelope& e);

  // Exposed for tests: the Prometheus text for a status answer plus each running job's
  // latest step report.
  static std::string PrometheusText(const nlohmann::json& status,
                                    const std::map<std::string, nlohmann::json>& last_steps);

 private:
  HttpApi() = default;
  void Routes();
  // Sends a request through the loop; nullopt when it did not answer in time.
  std::optional<Envelope> Ask(MessageType type, const std::string& job_id, nlohmann::json body);

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::string token_;
  std::mutex mu_;
  std::condition_variable answered_;
  uint64_t next_ = 1;
  std::deque<std::pair<std::string, Envelope>> requests_;
  std::map<std::string, std::optional<Envelope>> waiting_;  // peer -> answer once it came
};

}  // namespace moerun::coordinator
