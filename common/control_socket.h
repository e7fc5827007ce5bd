// The client side of the control plane (docs/architecture.md §6): CURVE keys of a client and DEALER
// sockets that carry one envelope per ZeroMQ message to the coordinator's ROUTER.
//
// A client key directory holds
//   client.key, client.key_secret   this client's key pair (the coordinator must list
//                                   client.key in its authorized_keys)
//   coordinator.key                 the coordinator's public key
// Daemons, trainers and the CLI all use this layout; `moerun keygen` writes it.
// Functions are thread-safe; a socket belongs to one thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "common/curve_auth.h"
#include "common/protocol.h"
#include "common/status.h"

namespace moerun {

inline constexpr char kClientKeyName[] = "client";
inline constexpr char kCoordinatorKeyName[] = "coordinator";

struct ClientKeys {
  CurveKeyPair client;
  std::string coordinator_public;  // Z85
};

// Errors name the missing or unreadable file.
Result<ClientKeys> LoadClientKeys(const std::string& dir);

struct DealerOptions {
  std::string address;   // tcp://host:port or ipc://path
  std::string identity;  // the ROUTER's routing id for this peer: "worker:<id>", ...
  // true: a message sent while no connection is up is refused (EAGAIN) instead of queued;
  // for periodic messages that the next one supersedes.
  bool immediate = false;
};

// A CURVE client DEALER connected to the coordinator; it reconnects by itself with backoff.
Result<std::unique_ptr<zmq::socket_t>> ConnectDealer(zmq::context_t& ctx, const ClientKeys& keys,
                                                     const DealerOptions& opts);

// Sends without blocking. Returns false when the message could not be queued (no connection
// and `immediate`, or the queue is full): the caller decides whether that matters.
Result<bool> SendEnvelope(zmq::socket_t& dealer, const Envelope& e);

// Waits up to timeout_ms for one message; nullopt when none came. A message that is not a
// valid envelope is an error naming why (the caller drops it and goes on).
Result<std::optional<Envelope>> ReceiveEnvelope(zmq::socket_t& dealer, int64_t timeout_ms);

}  // namespace moerun
