#include "common/control_socket.h"

#include <fstream>

#include "common/timeouts.h"

namespace moerun {

Result<ClientKeys> LoadClientKeys(const std::string& dir) {
  auto client = LoadCurveKeyPair(dir, kClientKeyName);
  if (!client.ok()) {
    return client.status().WithContext("client keys (create them with `moerun keygen " + dir +
                                       "`)");
  }
  const std::string path = dir + "/" + kCoordinatorKeyName + ".key";
  std::ifstream in(path);
  std::string key;
  if (!(in >> key) || key.size() != 40) {
    return Status::NotFound(path +
                            ": the coordinator's public key is missing or unreadable (copy "
                            "coordinator.key from the coordinator's --state-dir)");
  }
  return ClientKeys{client.value(), key};
}

Result<std::unique_ptr<zmq::socket_t>> ConnectDealer(zmq::context_t& ctx, const ClientKeys& keys,
                                                     const DealerOptions& opts) {
  try {
    auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    s->set(zmq::sockopt::routing_id, opts.identity);
    s->set(zmq::sockopt::curve_serverkey, keys.coordinator_public);
    s->set(zmq::sockopt::curve_publickey, keys.client.public_key);
    s->set(zmq::sockopt::curve_secretkey, keys.client.secret_key);
    s->set(zmq::sockopt::linger, kControlLingerMs);
    s->set(zmq::sockopt::reconnect_ivl, kControlReconnectMs);
    s->set(zmq::sockopt::reconnect_ivl_max, kControlReconnectMaxMs);
    s->set(zmq::sockopt::sndhwm, kControlSendQueueMessages);
    s->set(zmq::sockopt::immediate, opts.immediate ? 1 : 0);
    s->connect(opts.address);
    return s;
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("control plane: cannot connect to " + opts.address + ": " +
                                   e.what());
  }
}

Result<bool> SendEnvelope(zmq::socket_t& dealer, const Envelope& e) {
  auto bytes = EncodeEnvelope(e);
  if (!bytes.ok()) return bytes.status();
  try {
    auto sent = dealer.send(zmq::buffer(bytes.value()), zmq::send_flags::dontwait);
    return sent.has_value();
  } catch (const zmq::error_t& err) {
    return Status::Unavailable(std::string("control plane send: ") + err.what());
  }
}

Result<std::optional<Envelope>> ReceiveEnvelope(zmq::socket_t& dealer, int64_t timeout_ms) {
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  try {
    zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
    if (!(item.revents & ZMQ_POLLIN)) return std::optional<Envelope>();
    zmq::message_t msg;
    if (!dealer.recv(msg, zmq::recv_flags::dontwait)) return std::optional<Envelope>();
    while (msg.more()) {  // a DEALER message is one frame; drain anything else
      zmq::message_t extra;
      (void)dealer.recv(extra, zmq::recv_flags::dontwait);
      if (!extra.more()) return Status::InvalidArgument("a control message of several frames");
    }
    auto e = DecodeEnvelope(msg.to_string_view());
    if (!e.ok()) return e.status();
    return std::optional<Envelope>(std::move(e.value()));
  } catch (const zmq::error_t& err) {
    return Status::Unavailable(std::string("control plane receive: ") + err.what());
  }
}

}  // namespace moerun
