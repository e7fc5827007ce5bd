// ControlServer: the coordinator's ZeroMQ side (docs/architecture.md §6). A ROUTER socket with
// CURVE (the coordinator's key pair) behind a ZAP handler that admits only authorized_keys; every
// refusal is logged with the peer's address and key and counted. Frames that are not one
// valid envelope (wrong frame count, over kMaxMessageBytes, bad magic, version, type or body)
// are dropped and counted, never fatal. Run() feeds the rest to a Coordinator and calls its
// Tick() every kCoordinatorTickMs.
//
// Sends never block: a message for a peer that is not connected (or whose queue is full) is
// dropped and Send returns false. Threading: Run() and Send() on one thread; the stop flag
// may be set from anywhere (a signal handler included).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <zmq.hpp>

#include "common/curve_auth.h"
#include "common/protocol.h"
#include "common/status.h"

namespace moerun::coordinator {

class Coordinator;

class ControlServer {
 public:
  // Binds `address` (tcp://host:port, tcp://host:* for any free port, or ipc://...).
  static Result<std::unique_ptr<ControlServer>> Bind(const std::string& address,
                                                     const CurveKeyPair& server_keys,
                                                     std::set<std::string> authorized_keys);
  ~ControlServer();

  // The bound address with the port resolved (what clients connect to).
  const std::string& endpoint() const { return endpoint_; }
  bool Send(const std::string& peer, const Envelope& e);
  // each_iteration (optional) runs on the loop's thread after every poll: other request
  // sources (the HTTP API) feed the coordinator there.
  void Run(Coordinator* coordinator, const std::atomic<bool>& stop,
           const std::function<void()>& each_iteration = nullptr);
  uint64_t malformed() const { return malformed_; }
  uint64_t auth_denied() const { return zap_->denied(); }

 private:
  ControlServer() = default;
  void Drain(Coordinator* coordinator);

  zmq::context_t ctx_;
  std::unique_ptr<ZapAuthenticator> zap_;
  std::unique_ptr<zmq::socket_t> router_;
  std::string endpoint_;
  uint64_t malformed_ = 0;
};

}  // namespace moerun::coordinator
