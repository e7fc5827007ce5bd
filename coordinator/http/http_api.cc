#include "coordinator/http/http_api.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "common/limits.h"
#include "common/timeouts.h"
#include "coordinator/dashboard/dashboard_assets.h"
#include "coordinator/http/guarded_server.h"

namespace moerun::coordinator {
namespace {

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

// Constant time, so the token cannot be guessed byte by byte from response times.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<HttpApi>> HttpApi::Start(const std::string& host, int port,
                                                std::string token) {
  std::unique_ptr<HttpApi> api(new HttpApi());
  api->token_ = std::move(token);
  api->server_ = std::make_unique<GuardedServer>();
  api->Routes();
  api->port_ = port == 0 ? api->server_->bind_to_any_port(host.c_str())
                         : (api->server_->bind_to_port(host.c_str(), port) ? port : -1);
  if (api->port_ <= 0) {
    return Status::Unavailable("HTTP: cannot listen on " + host + ":" + std::to_string(port) +
                               " (in use? choose another with --http HOST:PORT)");
  }
  static_cast<GuardedServer&>(*api->server_).RaiseBacklog();
  HttpApi* raw = api.get();
  api->thread_ = std::thread([raw] { raw->server_->listen_after_bind(); });
  return api;
}

std::unique_ptr<HttpApi> HttpApi::Unbound(std::string token) {
  std::unique_ptr<HttpApi> api(new HttpApi());
  api->token_ = std::move(token);
  api->server_ = std::make_unique<GuardedServer>();
  api->Routes();
  return api;
}

void HttpApi::ServeConnection(int sock) {
  static_cast<GuardedServer&>(*server_).ServeConnection(sock);
}

HttpApi::~HttpApi() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::pair<std::string, Envelope>> HttpApi::TakeRequests() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, Envelope>> out(requests_.begin(), requests_.end());
  requests_.clear();
  return out;
}

bool HttpApi::Deliver(const std::string& peer, const Envelope& e) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiting_.find(peer);
  if (it == waiting_.end()) return false;  // its handler gave up
  it->second = e;
  answered_.notify_all();
  return true;
}

std::optional<Envelope> HttpApi::Ask(MessageType type, const std::string& job_id,
                                     nlohmann::json body) {
  std::unique_lock<std::mutex> lock(mu_);
  const std::string peer = "http:" + std::to_string(next_++);
  waiting_[peer] = std::nullopt;
  requests_.push_back({peer, Envelope{type, 0, job_id, "http", std::move(body)}});
  answered_.wait_for(lock, std::chrono::milliseconds(kHttpRequestTimeoutMs),
                     [&] { return waiting_[peer].has_value(); });
  std::optional<Envelope> answer = waiting_[peer];
  waiting_.erase(peer);
  return answer;
}

void HttpApi::Routes() {
  httplib::Server& s = *server_;
  // The coordinator's answer as an HTTP response: Reply 200, Error 404/400, silence 503.
  auto answer = [this](httplib::Response& res, MessageType type, const std::string& job,
                       nlohmann::json body) {
    auto e = Ask(type, job, std::move(body));
    if (!e) {
      SendJson(res, 503, {{"error", "the coordinator did not answer in time"}});
    } else if (e->type == MessageType::kError) {
      const std::string why = e->body.value("error", std::string("error"));
      SendJson(res, why.rfind("no job", 0) == 0 ? 404 : 400, e->body);
    } else {
      SendJson(res, 200, e->body);
    }
  };
  // Writes: the token and the declared size are checked from the headers, before a byte of
  // the body is read (an anonymous 1 GiB upload costs the reading of its headers).
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.method == "GET" || req.method == "HEAD")
      return httplib::Server::HandlerResponse::Unhandled;
    const std::string h = req.get_header_value("Authorization");
    if (!(h.rfind("Bearer ", 0) == 0 && SameToken(h.substr(7), token_))) {
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_header("Connection", "close");
      SendJson(res, 401,
               {{"error",
                 "writes need 'Authorization: Bearer <token>' (the token is in the "
                 "coordinator's state dir, http.token)"}});
      return httplib::Server::HandlerResponse::Handled;
    }
    const std::string length = req.get_header_value("Content-Length");
    if (!std::all_of(length.begin(), length.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      res.set_header("Connection", "close");
      SendJson(res, 400, {{"error", "Content-Length '" + length + "' is not a number of bytes"}});
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!length.empty() && (length.size() > 12 || std::stoull(length) > kMaxHttpBodyBytes)) {
      res.set_header("Connection", "close");
      SendJson(res, 413,
               {{"error", "a request body is at most " + std::to_string(kMaxHttpBodyBytes) +
                              " bytes (a job spec at most " + std::to_string(kMaxJobSpecBytes) +
                              "); this one declares " + length}});
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Every error answers JSON that says what was wrong, whoever produced it.
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string why;
        switch (res.status) {
          case 400:
            why = "malformed request: not HTTP/1.1 this server can read";
            break;
          case 404:
            why = "no such path: " + req.path + " (the API is under /api, see /api/status)";
            break;
          case 405:
            why = req.method + " is not allowed on " + req.path;
            break;
          case 413:
            why = "the request is larger than " + std::to_string(kMaxHttpBodyBytes) + " bytes";
            break;
          case 414:
            why = "the request line is too long";
            break;
          default:
            why = "HTTP status " + std::to_string(res.status);
        }
        SendJson(res, res.status, {{"error", why}});
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
        std::string what = "unknown";
        try {
          if (e) std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          what = ex.what();
        } catch (...) {
        }
        SendJson(res, 500, {{"error", "the request failed inside the coordinator: " + what}});
      });
  // A body up to kMaxHttpBodyBytes, whatever its Content-Type (curl -d sends a form's); false
  // after a 413 or 400.
  auto read_body = [](const httplib::Request& req, const httplib::ContentReader& reader,
                      httplib::Response& res, std::string* body) {
    // No length and no chunks: no body (HTTP/1.1 requests are not read to the end of the
    // connection; `curl -X POST` sends neither).
    const bool chunked =
        req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
    if (!req.has_header("Content-Length") && !chunked) return true;
    bool too_large = false;
    const bool read = reader([&](const char* data, size_t n) {
      if (body->size() + n > kMaxHttpBodyBytes) {
        too_large = true;
        return false;
      }
      body->append(data, n);
      return true;
    });
    if (too_large) {
      res.set_header("Connection", "close");
      SendJson(
          res, 413,
          {{"error", "a request body is at most " + std::to_string(kMaxHttpBodyBytes) + " bytes"}});
      return false;
    }
    if (!read) {
      res.set_header("Connection", "close");
      SendJson(res, 400,
               {{"error",
                 "the request body could not be read whole (cut short, "
                 "too slow, or malformed chunks)"}});
      return false;
    }
    return true;
  };
  // The dashboard: embedded files, served from this thread (they need no coordinator state).
  for (const DashboardAsset& a : DashboardAssets()) {
    std::string pattern;
    for (char c : a.path) pattern += c == '.' ? std::string("\\.") : std::string(1, c);
    s.Get(pattern, [a](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", a.versioned ? "public, max-age=86400" : "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
      res.set_content(a.body.data(), a.body.size(), std::string(a.content_type));
    });
  }
  s.Get("/api/status", [answer](const httplib::Request&, httplib::Response& res) {
    answer(res, MessageType::kQuery, "", {{"what", "status"}});
  });
  // Slices of the status answer, for scripts that want one list.
  auto slice = [this](httplib::Response& res, const char* key) {
    auto e = Ask(MessageType::kQuery, "", {{"what", "status"}});
    if (!e || e->type != MessageType::kReply) {
      SendJson(res, 503, {{"error", "the coordinator did not answer in time"}});
      return;
    }
    SendJson(res, 200, {{key, e->body.value(key, nlohmann::json::array())}});
  };
  s.Get("/api/jobs",
        [slice](const httplib::Request&, httplib::Response& res) { slice(res, "jobs"); });
  s.Get("/api/workers",
        [slice](const httplib::Request&, httplib::Response& res) { slice(res, "workers"); });
  s.Get(R"(/api/jobs/([A-Za-z0-9._-]+))",
        [answer](const httplib::Request& req, httplib::Response& res) {
          answer(res, MessageType::kQuery, req.matches[1], {{"what", "job"}});
        });
  s.Get(R"(/api/jobs/([A-Za-z0-9._-]+)/events)",
        [answer](const httplib::Request& req, httplib::Response& res) {
          answer(res, MessageType::kQuery, req.matches[1], {{"what", "events"}});
        });
  // ?since=S&limit=N as the query's since_step and limit; false (after a 400) when malformed.
  constexpr int64_t kMaxStep = 1'000'000'000'000;  // steps are stored as 12 digits
  auto range = [](const httplib::Request& req, httplib::Response& res, nlohmann::json* query) {
    int64_t since = 0, limit = 10000;
    try {
      if (req.has_param("since")) since = std::stoll(req.get_param_value("since"));
      if (req.has_param("limit")) limit = std::stoll(req.get_param_value("limit"));
    } catch (const std::exception&) {
      SendJson(res, 400, {{"error", "since and limit are integers"}});
      return false;
    }
    if (limit < 0 || since < 0 || since > kMaxStep) {
      SendJson(res, 400, {{"error", "since is a step (0 to 10^12) and limit at least 0"}});
      return false;
    }
    (*query)["since_step"] = since;
    (*query)["limit"] = limit;
    return true;
  };
  s.Get(R"(/api/jobs/([A-Za-z0-9._-]+)/metrics)",
        [answer, range](const httplib::Request& req, httplib::Response& res) {
          nlohmann::json query = {{"what", "metrics"}};
          if (range(req, res, &query)) answer(res, MessageType::kQuery, req.matches[1], query);
        });
  s.Get(R"(/api/jobs/([A-Za-z0-9._-]+)/expert-load)",
        [answer, range](const httplib::Request& req, httplib::Response& res) {
          nlohmann::json query = {{"what", "expert_load"}, {"layer", req.get_param_value("layer")}};
          if (range(req, res, &query)) answer(res, MessageType::kQuery, req.matches[1], query);
        });
  // Writes: the pre-routing handler has checked the token.
  s.Post("/api/jobs", [answer, read_body](const httplib::Request& req, httplib::Response& res,
                                          const httplib::ContentReader& reader) {
    std::string text;
    if (!read_body(req, reader, res, &text)) return;
    auto body = nlohmann::json::parse(text, nullptr, false);
    if (!body.is_object() || !body.contains("spec_yaml") || !body["spec_yaml"].is_string()) {
      SendJson(res, 400,
               {{"error", text.empty() ? "the body is empty: send a JSON object with a "
                                         "\"spec_yaml\" string"
                                       : "the body is not a JSON object with a \"spec_yaml\" "
                                         "string"}});
      return;
    }
    answer(res, MessageType::kSubmitJob, "", body);
  });
  // Needs no body; one is read (for the connection's next request) and ignored.
  s.Post(R"(/api/jobs/([A-Za-z0-9._-]+)/cancel)",
         [answer, read_body](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) {
           std::string ignored;
           if (!read_body(req, reader, res, &ignored)) return;
           answer(res, MessageType::kCancelJob, req.matches[1], nlohmann::json::object());
         });
  // Optional body: {"reason": "..."}.
  s.Post(R"(/api/jobs/([A-Za-z0-9._-]+)/stop)",
         [answer, read_body](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) {
           std::string text;
           if (!read_body(req, reader, res, &text)) return;
           nlohmann::json body = nlohmann::json::object();
           if (!text.empty()) {
             body = nlohmann::json::parse(text, nullptr, false);
             if (!body.is_object()) {
               SendJson(res, 400,
                        {{"error",
                          "the body is not a JSON object (send none, or "
                          "{\"reason\": \"...\"})"}});
               return;
             }
           }
           answer(res, MessageType::kStopJob, req.matches[1], body);
         });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto status = Ask(MessageType::kQuery, "", {{"what", "status"}});
    if (!status || status->type != MessageType::kReply) {
      res.status = 503;
      return;
    }
    std::map<std::string, nlohmann::json> last;
    for (const auto& j : status->body.value("jobs", nlohmann::json::array())) {
      const std::string phase = j.value("phase", "");
      if (phase != "RUNNING") continue;
      auto m = Ask(MessageType::kQuery, j.value("job_id", ""), {{"what", "live"}});
      if (m && m->type == MessageType::kReply && m->body.contains("step"))
        last[j.value("job_id", "")] = m->body;
    }
    res.set_content(PrometheusText(status->body, last), "text/plain; version=0.0.4");
  });
}

std::string HttpApi::PrometheusText(const nlohmann::json& status,
                                    const std::map<std::string, nlohmann::json>& last_steps) {
  std::ostringstream o;
  auto help = [&](const char* name, const char* type, const char* text) {
    o << "# HELP " << name << " " << text << "\n# TYPE " << name << " " << type << "\n";
  };
  const auto& jobs = status.value("jobs", nlohmann::json::array());
  const auto& workers = status.value("workers", nlohmann::json::array());
  struct Gauge {
    const char* name;
    const char* key;
    const char* type;
    const char* text;
  };
  const Gauge job_gauges[] = {
      {"moerun_job_step", "step", "gauge", "Last step reported by rank 0."},
      {"moerun_job_total_steps", "total_steps", "gauge", "Steps the job trains."},
      {"moerun_job_loss", "loss", "gauge", "Training loss of the last step."},
      {"moerun_job_val_loss", "val_loss", "gauge", "Held-out loss of the last evaluation."},
      {"moerun_job_tokens_per_second", "tokens_per_s", "gauge", "Training throughput."},
      {"moerun_job_generation", "generation", "gauge", "Job generation (bumped per restart)."},
      {"moerun_job_restarts_total", "restarts", "counter", "Restarts after failures."},
      {"moerun_job_lost_steps_total", "lost_steps", "counter",
       "Steps trained again after restarts."},
      {"moerun_job_committed_step", "committed_step", "gauge", "Newest committed checkpoint step."},
      {"moerun_job_waiting_seconds", "waiting_s", "gauge",
       "How long the job has waited for slots to start or restart (absent: not waiting)."},
  };
  for (const auto& g : job_gauges) {
    help(g.name, g.type, g.text);
    for (const auto& j : jobs) {
      if (!j.contains(g.key) || !j[g.key].is_number()) continue;
      o << g.name << "{job=\"" << Label(j.value("job_id", "")) << "\"} " << j[g.key].dump() << "\n";
    }
  }
  help("moerun_job_state", "gauge", "1 for the job's current state.");
  for (const auto& j : jobs) {
    o << "moerun_job_state{job=\"" << Label(j.value("job_id", "")) << "\",state=\""
      << Label(j.value("phase", "")) << "\"} 1\n";
  }
  const Gauge step_gauges[] = {
      {"moerun_train_learning_rate", "lr", "gauge", "Learning rate of the last step."},
      {"moerun_train_grad_norm", "grad_norm", "gauge", "Gradient norm before clipping."},
      {"moerun_train_balance_loss", "balance_loss", "gauge",
       "Sequence-wise balance loss, summed over MoE layers."},
      {"moerun_train_mtp_loss", "mtp_loss", "gauge",
       "Multi-token prediction cross-entropy of the last step, averaged over the modules."},
      {"moerun_train_step_seconds", "step_time_s", "gauge", "Wall time of rank 0's last step."},
      {"moerun_train_expert_load_max_over_mean", "max_over_mean_load", "gauge",
       "Busiest expert's load over the mean, averaged over MoE layers."},
  };
  for (const auto& g : step_gauges) {
    help(g.name, g.type, g.text);
    for (const auto& [job, m] : last_steps) {
      if (!m.contains(g.key) || !m[g.key].is_number()) continue;
      o << g.name << "{job=\"" << Label(job) << "\"} " << m[g.key].dump() << "\n";
    }
  }
  help("moerun_rank_step_phase_seconds", "gauge",
       "A rank's last step split: compute, data_plane_wait (collectives and sends), bubble "
       "(waiting on a neighbouring pipeline stage).");
  for (const auto& [job, m] : last_steps) {
    for (const auto& r : m.value("ranks", nlohmann::json::array())) {
      const std::string l = "{job=\"" + Label(job) + "\",rank=\"" +
                            std::to_string(r.value("rank", 0)) + "\",phase=\"";
      o << "moerun_rank_step_phase_seconds" << l << "compute\"} " << r.value("compute_s", 0.0)
        << "\n";
      o << "moerun_rank_step_phase_seconds" << l << "data_plane_wait\"} "
        << r.value("data_wait_s", 0.0) << "\n";
      o << "moerun_rank_step_phase_seconds" << l << "bubble\"} " << r.value("bubble_s", 0.0)
        << "\n";
    }
  }
  help("moerun_rank_straggler", "gauge",
       "1 while a rank computes slower than fault_tolerance.straggler_factor x its peers' "
       "median for straggler_steps steps in a row (docs/cluster.md), else 0.");
  for (const auto& [job, m] : last_steps) {
    for (const auto& r : m.value("ranks", nlohmann::json::array())) {
      o << "moerun_rank_straggler{job=\"" << Label(job) << "\",rank=\""
        << std::to_string(r.value("rank", 0)) << "\",worker=\""
        << Label(r.value("worker", std::string())) << "\"} "
        << (r.value("straggler", false) ? 1 : 0) << "\n";
    }
  }
  help("moerun_expert_load", "gauge", "Tokens routed to each expert in the last step.");
  for (const auto& [job, m] : last_steps) {
    const nlohmann::json load = m.value("expert_load", nlohmann::json::object());
    for (const auto& [layer, counts] : load.items()) {
      for (size_t e = 0; e < counts.size(); ++e) {
        o << "moerun_expert_load{job=\"" << Label(job) << "\",layer=\"" << Label(layer)
          << "\",expert=\"" << e << "\"} " << counts[e].dump() << "\n";
      }
    }
  }
  // One family at a time: the exposition format wants a metric's samples together.
  struct WorkerGauge {
    const char* name;
    const char* type;
    const char* text;
    double (*value)(const nlohmann::json& w);  // NaN: no sample
  };
  const WorkerGauge worker_gauges[] = {
      {"moerun_worker_up", "gauge", "1 while the daemon heartbeats.",
       [](const nlohmann::json& w) { return w.value("alive", false) ? 1.0 : 0.0; }},
      {"moerun_worker_heartbeat_age_seconds", "gauge", "Time since the daemon's last message.",
       [](const nlohmann::json& w) {
         const int64_t age = w.value("heartbeat_age_ms", int64_t(-1));
         return age >= 0 ? double(age) / 1000.0 : std::nan("");
       }},
      {"moerun_worker_slots", "gauge", "Trainer slots the daemon offers.",
       [](const nlohmann::json& w) { return double(w.value("devices", 0)); }},
      {"moerun_worker_slots_used", "gauge", "Trainer slots running ranks.",
       [](const nlohmann::json& w) { return double(w.value("used", 0)); }},
      {"moerun_worker_trainers", "gauge", "Trainers running at the daemon's last heartbeat.",
       [](const nlohmann::json& w) { return double(w.value("trainers", 0)); }},
      {"moerun_worker_trainer_failures_total", "counter",
       "Trainers that failed on the daemon since the coordinator started.",
       [](const nlohmann::json& w) { return double(w.value("trainer_failures", 0)); }},
  };
  for (const auto& g : worker_gauges) {
    help(g.name, g.type, g.text);
    for (const auto& w : workers) {
      const double v = g.value(w);
      if (std::isnan(v)) continue;
      o << g.name << "{worker=\"" << Label(w.value("worker", "")) << "\",host=\""
        << Label(w.value("host", "")) << "\"} " << v << "\n";
    }
  }
  help("moerun_coordinator_messages_total", "counter", "Control-plane messages by outcome.");
  const nlohmann::json counters = status.value("counters", nlohmann::json::object());
  for (const auto& [kind, n] : counters.items()) {
    o << "moerun_coordinator_messages_total{kind=\"" << Label(kind) << "\"} " << n.dump() << "\n";
  }
  return o.str();
}

}  // namespace moerun::coordinator
