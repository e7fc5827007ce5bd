// ConnectionMonitor (common/connection_monitor.h) on real loopback sockets: an address where
// nothing listens is refused, a CURVE server that comes up there is "up", and a key the
// server's ZAP handler does not know is "key refused".
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "common/connection_monitor.h"
#include "common/control_socket.h"
#include "common/curve_auth.h"

namespace moerun {
namespace {

using Kind = LinkEvent::Kind;

// Polls `monitor` for up to 5 s until an event of `kind` shows.
bool Sees(ConnectionMonitor& monitor, Kind kind) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    for (const LinkEvent& e : monitor.Poll())
      if (e.kind == kind) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::unique_ptr<zmq::socket_t> CurveRouter(zmq::context_t& ctx, const CurveKeyPair& keys,
                                           const std::string& endpoint) {
  auto router = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::router);
  router->set(zmq::sockopt::linger, 0);
  router->set(zmq::sockopt::curve_server, 1);
  router->set(zmq::sockopt::curve_secretkey, keys.secret_key);
  router->bind(endpoint);
  return router;
}

TEST_CASE("connection monitor: refused while nothing listens, up when a server comes") {
  zmq::context_t ctx(1);
  const auto server = GenerateCurveKeyPair().value();
  const auto client = GenerateCurveKeyPair().value();
  ZapAuthenticator zap(ctx, {client.public_key});
  // A free port: bound, then let go.
  std::string endpoint;
  {
    auto probe = CurveRouter(ctx, server, "tcp://127.0.0.1:*");
    endpoint = probe->get(zmq::sockopt::last_endpoint);
  }
  auto dealer = ConnectDealer(ctx, {client, server.public_key}, {endpoint, "worker:t", true});
  REQUIRE(dealer.ok());
  auto monitor = ConnectionMonitor::Create(ctx, *dealer.value(), "test-up");
  REQUIRE(monitor.ok());
  CHECK(Sees(*monitor.value(), Kind::kRefused));
  auto router = CurveRouter(ctx, server, endpoint);
  CHECK(Sees(*monitor.value(), Kind::kUp));
  router.reset();  // the server goes: the connection drops, and the address refuses again
  CHECK(Sees(*monitor.value(), Kind::kDown));
  CHECK(Sees(*monitor.value(), Kind::kRefused));
}

TEST_CASE("connection monitor: a key the server does not admit is said as such") {
  zmq::context_t ctx(1);
  const auto server = GenerateCurveKeyPair().value();
  const auto stranger = GenerateCurveKeyPair().value();
  ZapAuthenticator zap(ctx, {GenerateCurveKeyPair().value().public_key});
  auto router = CurveRouter(ctx, server, "tcp://127.0.0.1:*");
  const std::string endpoint = router->get(zmq::sockopt::last_endpoint);
  auto dealer = ConnectDealer(ctx, {stranger, server.public_key}, {endpoint, "worker:t", true});
  REQUIRE(dealer.ok());
  auto monitor = ConnectionMonitor::Create(ctx, *dealer.value(), "test-auth");
  REQUIRE(monitor.ok());
  CHECK(Sees(*monitor.value(), Kind::kAuthFailed));
}

}  // namespace
}  // namespace moerun
