// CURVE on the control plane: keys round-trip through files (secret mode 0600), authorized
// keys parse with line-numbered errors, and only an authorized client reaches a CURVE server.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <fstream>

#include "common/curve_auth.h"
#include "tests/temp_path.h"

using moerun::CurveKeyPair;

namespace {

// Sends "hello" from a client with `client` keys; returns whether the server got it in time.
bool Reaches(zmq::context_t& ctx, const std::string& endpoint, const CurveKeyPair& server,
             const CurveKeyPair& client, zmq::socket_t& router) {
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::curve_serverkey, server.public_key);
  dealer.set(zmq::sockopt::curve_publickey, client.public_key);
  dealer.set(zmq::sockopt::curve_secretkey, client.secret_key);
  dealer.connect(endpoint);
  dealer.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(1000));
  if (!(item.revents & ZMQ_POLLIN)) return false;
  zmq::message_t id, body;
  (void)router.recv(id);
  (void)router.recv(body);
  return body.to_string() == "hello";
}

}  // namespace

TEST_CASE("key pairs round-trip through files; the secret is the owner's alone") {
  const std::string dir = moerun::testing::FreshTempPath("curve", "keys", true);
  auto keys = moerun::GenerateCurveKeyPair();
  REQUIRE(keys.ok());
  REQUIRE(moerun::SaveCurveKeyPair(dir, "coordinator", keys.value()).ok());
  auto back = moerun::LoadCurveKeyPair(dir, "coordinator");
  REQUIRE(back.ok());
  CHECK(back->public_key == keys->public_key);
  CHECK(back->secret_key == keys->secret_key);
  struct stat st {};
  REQUIRE(stat((dir + "/coordinator.key_secret").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(moerun::LoadCurveKeyPair(dir, "nobody").status().code() == moerun::Status::Code::kNotFound);
  std::ofstream(dir + "/authorized_keys") << "# daemons\n"
                                          << keys->public_key << "  # host-a\n\nnot-a-key\n";
  auto bad = moerun::LoadAuthorizedKeys(dir + "/authorized_keys");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == dir + "/authorized_keys:4: not a 40-character Z85 CURVE key");
  std::ofstream(dir + "/authorized_keys") << "# daemons\n" << keys->public_key << "  # host-a\n";
  auto good = moerun::LoadAuthorizedKeys(dir + "/authorized_keys");
  REQUIRE_MESSAGE(good.ok(), good.status().ToString());
  CHECK(good->size() == 1);
  // Z85 keys may contain '#': only a '#' that begins a word is a comment.
  std::ofstream(dir + "/authorized_keys") << "ab#de" << keys->public_key.substr(5) << " #c\n";
  auto hashed = moerun::LoadAuthorizedKeys(dir + "/authorized_keys");
  REQUIRE_MESSAGE(hashed.ok(), hashed.status().ToString());
  CHECK(hashed->count("ab#de" + keys->public_key.substr(5)) == 1);
}

TEST_CASE("only an authorized client reaches a CURVE server") {
  zmq::context_t ctx(1);
  const auto server = moerun::GenerateCurveKeyPair().value();
  const auto friend_keys = moerun::GenerateCurveKeyPair().value();
  const auto stranger = moerun::GenerateCurveKeyPair().value();
  moerun::ZapAuthenticator zap(ctx, {friend_keys.public_key});
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::curve_server, 1);
  router.set(zmq::sockopt::curve_secretkey, server.secret_key);
  const std::string endpoint = "ipc://@moerun-curve-test-" + std::to_string(getpid());
  router.bind(endpoint);
  CHECK(Reaches(ctx, endpoint, server, friend_keys, router));
  CHECK_FALSE(Reaches(ctx, endpoint, server, stranger, router));
  CHECK(zap.allowed() >= 1);
  CHECK(zap.denied() >= 1);
  zap.Allow(stranger.public_key);
  CHECK(Reaches(ctx, endpoint, server, stranger, router));
  router.close();
}
