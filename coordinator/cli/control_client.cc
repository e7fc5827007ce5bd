#include "coordinator/cli/control_client.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common/exit_codes.h"
#include "common/timeouts.h"

namespace moerun::cli {

std::string DefaultKeysDir() {
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.moerun/keys";
}

int CliExitCode(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kInvalidArgument:
    case Status::Code::kNotFound:
    case Status::Code::kAlreadyExists:
    case Status::Code::kFailedPrecondition:
      return kExitInvalidConfig;
    default:
      return kExitFailure;
  }
}

ControlClient::~ControlClient() {
  monitor_.reset();
  dealer_.reset();
}

Result<std::unique_ptr<ControlClient>> ControlClient::Connect(const std::string& address,
                                                              const std::string& keys_dir) {
  if (address.rfind("tcp://", 0) != 0 && address.rfind("ipc://", 0) != 0) {
    return Status::InvalidArgument(
        "coordinator address '" + address + "' has no scheme: write tcp://" +
        (address.find("://") == std::string::npos ? address : "HOST:PORT") +
        " (or ipc://PATH for one host) in --coordinator or MOERUN_COORDINATOR");
  }
  auto keys = LoadClientKeys(keys_dir);
  if (!keys.ok()) {
    return Status::InvalidArgument(keys.status().message() +
                                   " (make a key directory with `moerun keygen " + keys_dir +
                                   " --coordinator-key coordinator.key`, or point --keys or "
                                   "MOERUN_KEYS at one)");
  }
  std::unique_ptr<ControlClient> c(new ControlClient());
  c->address_ = address;
  c->keys_dir_ = keys_dir;
  c->public_key_ = keys->client.public_key;
  std::random_device rd;
  const std::string id = "cli:" + std::to_string(getpid()) + ":" + std::to_string(rd());
  try {
    // The monitor must exist before the connection, or the handshake's verdict is missed.
    c->dealer_ = std::make_unique<zmq::socket_t>(c->ctx_, zmq::socket_type::dealer);
    const std::string mon = "inproc://monitor-" + id;
    if (zmq_socket_monitor(c->dealer_->handle(), mon.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0) {
      return Status::Internal(std::string("socket monitor: ") + zmq_strerror(zmq_errno()));
    }
    c->monitor_ = std::make_unique<zmq::socket_t>(c->ctx_, zmq::socket_type::pair);
    c->monitor_->set(zmq::sockopt::linger, 0);
    c->monitor_->connect(mon);
    zmq::socket_t& s = *c->dealer_;
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::curve_serverkey, keys->coordinator_public);
    s.set(zmq::sockopt::curve_publickey, keys->client.public_key);
    s.set(zmq::sockopt::curve_secretkey, keys->client.secret_key);
    s.set(zmq::sockopt::linger, 0);
    s.connect(address);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("cannot connect to the coordinator at " + address + ": " +
                                   e.what());
  }
  return c;
}

Result<nlohmann::json> ControlClient::Request(MessageType type, const std::string& job_id,
                                              nlohmann::json body, int64_t timeout_ms) {
  auto bytes = EncodeEnvelope({type, 0, job_id, "cli", std::move(body)});
  if (!bytes.ok()) return bytes.status();
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    if (!dealer_->send(zmq::buffer(bytes.value()), zmq::send_flags::dontwait)) {
      return Status::Unavailable("cannot queue a request for the coordinator at " + address_);
    }
    while (Clock::now() < deadline) {
      zmq::pollitem_t items[] = {{dealer_->handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor_->handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(kCliPollSliceMs));
      if (items[1].revents & ZMQ_POLLIN) {
        zmq::message_t event, endpoint;
        (void)monitor_->recv(event);
        if (event.more()) (void)monitor_->recv(endpoint);
        uint16_t what = 0;
        if (event.size() >= 2) std::memcpy(&what, event.data(), 2);
        if (what == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
          return Status::FailedPrecondition(
              "the coordinator at " + address_ + " refused this client's key " + public_key_ +
              " (" + keys_dir_ +
              "/client.key): add it to authorized_keys in the coordinator's state dir");
        }
        return Status::FailedPrecondition("the CURVE handshake with " + address_ +
                                          " failed: is coordinator.key in " + keys_dir_ +
                                          " this coordinator's public key?");
      }
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t msg;
      if (!dealer_->recv(msg, zmq::recv_flags::dontwait)) continue;
      auto e = DecodeEnvelope(msg.to_string_view());
      if (!e.ok()) return e.status().WithContext("the coordinator's answer");
      if (e->type == MessageType::kError) {
        // A refusal of what was asked, unless the coordinator says trying again may help.
        const std::string why = e->body.value("error", std::string("unknown error"));
        if (e->body.value("retryable", false)) return Status::Unavailable(why);
        return Status::FailedPrecondition(why);
      }
      return e->body;
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("control plane: ") + e.what());
  }
  return Status::TimedOut("no answer from the coordinator at " + address_ + " within " +
                          std::to_string(timeout_ms / 1000) +
                          " s: is it running there? (--coordinator or MOERUN_COORDINATOR)");
}

}  // namespace moerun::cli
