// ConnectionMonitor: what a DEALER's connection to the coordinator is doing, read from
// libzmq's socket monitor (zmq_socket_monitor over an inproc PAIR). The worker daemon uses it
// for two things the messages alone cannot tell (docs/architecture.md §6):
//  - a connection that came up: send a heartbeat at once instead of at the next interval, so
//    reconnection costs one libzmq retry, not a heartbeat interval more;
//  - a connection attempt refused outright: nothing listens at the coordinator's address,
//    so no coordinator is counting this daemon's silence and its lease may wait (a restarted
//    coordinator counts from its own start).
// Poll() never blocks. Not thread-safe: the socket's owner thread polls it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "common/timeouts.h"

namespace moerun {

struct LinkEvent {
  enum class Kind {
    kUp,               // the CURVE handshake succeeded: messages flow
    kDown,             // an established connection closed
    kRefused,          // a connection attempt was refused quickly
    kAuthFailed,       // the coordinator refused this client's key (detail: ZAP status code)
    kHandshakeFailed,  // the handshake failed otherwise (detail: libzmq's event value)
  };
  Kind kind;
  int64_t detail = 0;
};
const char* ToString(LinkEvent::Kind kind);

class ConnectionMonitor {
 public:
  // Watches `socket` (which must outlive the monitor); `name` makes the inproc address unique.
  static Result<std::unique_ptr<ConnectionMonitor>> Create(zmq::context_t& ctx,
                                                           zmq::socket_t& socket,
                                                           const std::string& name);
  ~ConnectionMonitor();

  // Events since the last call, oldest first.
  std::vector<LinkEvent> Poll();

 private:
  ConnectionMonitor(zmq::socket_t& watched, zmq::socket_t pair);
  zmq::socket_t* watched_;
  zmq::socket_t pair_;
  int64_t attempt_started_ms_ = -1;  // the last connect that went in progress; -1: none
};

}  // namespace moerun
