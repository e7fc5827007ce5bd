// ControlClient: the CLI's requests to a coordinator (docs/architecture.md §6): one CURVE DEALER,
// one request and its answer at a time. Errors say what to do: a key the coordinator refused (seen
// through the socket's handshake events, not guessed from a timeout), a coordinator that does not
// answer, or the coordinator's own Error answer. Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <zmq.hpp>

#include "common/control_socket.h"
#include "common/status.h"

namespace moerun::cli {

// The exit code of a CLI verb that talked to a coordinator (README, "Exit codes"): 2 for what
// the user must change (a flag, an address, keys, a request the coordinator refused: an
// unknown job, a second cancel), 1 for what may pass by itself (no answer, a coordinator
// that could not store something).
int CliExitCode(const Status& s);

// Where the CLI finds its coordinator and keys: flags, else MOERUN_COORDINATOR and
// MOERUN_KEYS, else these.
inline constexpr char kDefaultCoordinator[] = "tcp://127.0.0.1:7100";
std::string DefaultKeysDir();  // $HOME/.moerun/keys

class ControlClient {
 public:
  static Result<std::unique_ptr<ControlClient>> Connect(const std::string& address,
                                                        const std::string& keys_dir);
  ~ControlClient();

  // Connect: InvalidArgument for an address without tcp:// or ipc:// and for a key directory
  // that cannot be read, each saying what to write instead.
  // Request: the body of the coordinator's Reply; its Error answer becomes a
  // FailedPrecondition with the coordinator's words (Unavailable when it says "retryable").
  Result<nlohmann::json> Request(MessageType type, const std::string& job_id, nlohmann::json body,
                                 int64_t timeout_ms);

 private:
  ControlClient() = default;

  std::string address_, keys_dir_, public_key_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<zmq::socket_t> monitor_;  // handshake events of dealer_
};

}  // namespace moerun::cli
