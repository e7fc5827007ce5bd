#include "coordinator/service/control_server.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "common/limits.h"
#include "common/timeouts.h"
#include "coordinator/service/coordinator.h"

namespace moerun::coordinator {
namespace {

// Log the first refusals and then one in a thousand: a flood must not fill the disk.
constexpr int kMaxMessagesPerDrain = 1000;

bool ShouldLog(uint64_t n) { return n <= 10 || n % 1000 == 0; }

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::Bind(const std::string& address,
                                                           const CurveKeyPair& server_keys,
                                                           std::set<std::string> authorized) {
  std::unique_ptr<ControlServer> s(new ControlServer());
  try {
    // Beyond libzmq's default of 1023 sockets: one ROUTER, but the bench runs thousands of
    // simulated daemons in the same process.
    s->zap_ = std::make_unique<ZapAuthenticator>(s->ctx_, std::move(authorized));
    auto denied = std::make_shared<std::atomic<uint64_t>>(0);
    s->zap_->OnDenied([denied](const std::string& addr, const std::string& key) {
      const uint64_t n = denied->fetch_add(1) + 1;
      if (ShouldLog(n)) {
        spdlog::warn("refused a client from {} with key {}: not in authorized_keys ({} refused)",
                     addr, key, n);
      }
    });
    s->router_ = std::make_unique<zmq::socket_t>(s->ctx_, zmq::socket_type::router);
    zmq::socket_t& r = *s->router_;
    r.set(zmq::sockopt::curve_server, 1);
    r.set(zmq::sockopt::curve_secretkey, server_keys.secret_key);
    r.set(zmq::sockopt::zap_domain, "moerun");
    r.set(zmq::sockopt::router_mandatory, 1);  // an unknown peer is an error, not silence
    r.set(zmq::sockopt::router_handover, 1);   // a reconnecting peer takes over its id
    r.set(zmq::sockopt::maxmsgsize, int64_t(kMaxMessageBytes));
    r.set(zmq::sockopt::linger, 0);
    r.set(zmq::sockopt::backlog, kControlListenBacklog);
    r.bind(address);
    s->endpoint_ = r.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("control plane: cannot listen on " + address + ": " + e.what() +
                               " (is another coordinator using it?)");
  }
  return s;
}

ControlServer::~ControlServer() {
  router_.reset();
  zap_.reset();
}

bool ControlServer::Send(const std::string& peer, const Envelope& e) {
  auto bytes = EncodeEnvelope(e);
  if (!bytes.ok()) {
    spdlog::error("cannot encode {} for {}: {}", ToString(e.type), peer, bytes.status().message());
    return false;
  }
  try {
    if (!router_->send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      return false;
    return router_->send(zmq::buffer(bytes.value()), zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t&) {
    return false;  // EHOSTUNREACH: the peer is not connected (router_mandatory)
  }
}

void ControlServer::Drain(Coordinator* coordinator) {
  // Bounded, so timers still run under a flood of messages.
  for (int n = 0; n < kMaxMessagesPerDrain; ++n) {
    zmq::message_t id;
    if (!router_->recv(id, zmq::recv_flags::dontwait)) return;
    std::vector<zmq::message_t> frames;
    while (frames.empty() || frames.back().more()) {
      frames.emplace_back();
      if (!router_->recv(frames.back(), zmq::recv_flags::dontwait)) break;
    }
    const std::string peer = id.to_string();
    if (frames.size() != 1) {
      ++malformed_;
      ++coordinator->counters().malformed;
      if (ShouldLog(malformed_)) {
        spdlog::warn("dropped a message of {} frames from {} ({} malformed so far)",
                     frames.size() + 1, peer, malformed_);
      }
      continue;
    }
    auto env = DecodeEnvelope(frames[0].to_string_view());
    if (!env.ok()) {
      ++malformed_;
      ++coordinator->counters().malformed;
      if (ShouldLog(malformed_)) {
        spdlog::warn("dropped a message from {}: {} ({} malformed so far)", peer,
                     env.status().message(), malformed_);
      }
      continue;
    }
    coordinator->Handle(peer, env.value());
  }
}

void ControlServer::Run(Coordinator* coordinator, const std::atomic<bool>& stop,
                        const std::function<void()>& each_iteration) {
  using Clock = std::chrono::steady_clock;
  auto next_tick = Clock::now();
  while (!stop.load()) {
    zmq::pollitem_t item{router_->handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(kControlPollMs));
      if (item.revents & ZMQ_POLLIN) Drain(coordinator);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::error("control plane: {}", e.what());
    }
    if (each_iteration) each_iteration();
    if (Clock::now() >= next_tick) {
      coordinator->counters().auth_denied = zap_->denied();
      coordinator->Tick();
      next_tick = Clock::now() + std::chrono::milliseconds(kCoordinatorTickMs);
    }
  }
}

}  // namespace moerun::coordinator
