// CURVE authentication for the control plane (docs/architecture.md §6): key pairs on disk, the list
// of authorized client keys, and a ZAP handler that lets only those clients in.
//
// Files in a state directory:
//   <name>.key          the public key (Z85, 40 characters)
//   <name>.key_secret   the secret key, mode 0600
//   authorized_keys     one client public key per line; a '#' that begins a word starts a
//                       comment ('#' inside a key is one of Z85's characters)
// A CURVE server socket in a context with a ZapAuthenticator accepts a client only when the
// client's public key is authorized; anything else is denied (and counted) before a single
// message reaches the server's code.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "common/status.h"

namespace moerun {

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

Result<CurveKeyPair> GenerateCurveKeyPair();
Status SaveCurveKeyPair(const std::string& dir, const std::string& name, const CurveKeyPair& keys);
Result<CurveKeyPair> LoadCurveKeyPair(const std::string& dir, const std::string& name);
// Keys that are not 40-character Z85 strings are refused with their line number.
Result<std::set<std::string>> LoadAuthorizedKeys(const std::string& path);

// The ZAP handler (ZeroMQ RFC 27) of `ctx`: one thread answering libzmq's authentication
// requests. Create it before binding CURVE server sockets in the same context.
class ZapAuthenticator {
 public:
  ZapAuthenticator(zmq::context_t& ctx, std::set<std::string> allowed_z85);
  ~ZapAuthenticator();

  void Allow(const std::string& public_key_z85);
  // Called (on the handler's thread) for every refused client: its address and key (Z85, or
  // the mechanism's name when it did not use CURVE), so the owner can log who knocked.
  void OnDenied(std::function<void(const std::string& address, const std::string& key)> cb);
  uint64_t allowed() const { return allowed_.load(); }
  uint64_t denied() const { return denied_.load(); }

 private:
  void Loop();

  zmq::socket_t socket_;
  std::mutex mu_;
  std::set<std::string> keys_;
  std::function<void(const std::string&, const std::string&)> on_denied_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> allowed_{0}, denied_{0};
  std::thread thread_;
};

}  // namespace moerun
