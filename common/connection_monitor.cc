#include "common/connection_monitor.h"

#include <cstring>

#include "common/clock.h"

namespace moerun {

const char* ToString(LinkEvent::Kind kind) {
  switch (kind) {
    case LinkEvent::Kind::kUp:
      return "up";
    case LinkEvent::Kind::kDown:
      return "down";
    case LinkEvent::Kind::kRefused:
      return "refused";
    case LinkEvent::Kind::kAuthFailed:
      return "key refused";
    case LinkEvent::Kind::kHandshakeFailed:
      return "handshake failed";
  }
  return "?";
}

Result<std::unique_ptr<ConnectionMonitor>> ConnectionMonitor::Create(zmq::context_t& ctx,
                                                                     zmq::socket_t& socket,
                                                                     const std::string& name) {
  const std::string address = "inproc://moerun-monitor-" + name;
  constexpr int kEvents = ZMQ_EVENT_CONNECT_DELAYED | ZMQ_EVENT_CONNECT_RETRIED |
                          ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                          ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                          ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
  if (zmq_socket_monitor(socket.handle(), address.c_str(), kEvents) != 0) {
    return Status::Internal("cannot monitor the control socket: " +
                            std::string(zmq_strerror(zmq_errno())));
  }
  try {
    zmq::socket_t pair(ctx, zmq::socket_type::pair);
    pair.connect(address);
    return std::unique_ptr<ConnectionMonitor>(new ConnectionMonitor(socket, std::move(pair)));
  } catch (const zmq::error_t& e) {
    zmq_socket_monitor(socket.handle(), nullptr, 0);
    return Status::Internal(std::string("cannot read the control socket's monitor: ") + e.what());
  }
}

ConnectionMonitor::ConnectionMonitor(zmq::socket_t& watched, zmq::socket_t pair)
    : watched_(&watched), pair_(std::move(pair)) {}

ConnectionMonitor::~ConnectionMonitor() {
  zmq_socket_monitor(watched_->handle(), nullptr, 0);  // stop before the PAIR goes
  pair_.set(zmq::sockopt::linger, 0);
}

std::vector<LinkEvent> ConnectionMonitor::Poll() {
  std::vector<LinkEvent> out;
  while (true) {
    // A monitor message is two frames: 6 bytes (uint16 event, uint32 value), then the address.
    zmq::message_t head, address;
    try {
      if (!pair_.recv(head, zmq::recv_flags::dontwait)) break;
      if (head.more()) (void)pair_.recv(address, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t&) {
      break;
    }
    if (head.size() < 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, head.data(), 2);
    std::memcpy(&value, static_cast<const char*>(head.data()) + 2, 4);
    const int64_t now = SystemClock::Default()->NowMs();
    switch (event) {
      case ZMQ_EVENT_CONNECT_DELAYED:
        attempt_started_ms_ = now;
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        // Refused at once (no attempt in progress) or soon after it started.
        if (attempt_started_ms_ < 0 || now - attempt_started_ms_ <= kConnectRefusedWithinMs)
          out.push_back({LinkEvent::Kind::kRefused, 0});
        attempt_started_ms_ = -1;
        break;
      case ZMQ_EVENT_DISCONNECTED:
        out.push_back({LinkEvent::Kind::kDown, 0});
        break;
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        attempt_started_ms_ = -1;
        out.push_back({LinkEvent::Kind::kUp, 0});
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        out.push_back({LinkEvent::Kind::kAuthFailed, int64_t(value)});
        break;
      default:  // the other handshake failures
        out.push_back({LinkEvent::Kind::kHandshakeFailed, int64_t(value)});
    }
  }
  return out;
}

}  // namespace moerun
