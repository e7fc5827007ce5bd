// The control-plane envelope: round trips, and every way a message can be wrong is refused
// with a reason (never a crash), including 10,000 random mutations of a valid message.
#include <doctest/doctest.h>

#include <random>

#include "common/limits.h"
#include "common/protocol.h"

using moerun::DecodeEnvelope;
using moerun::EncodeEnvelope;
using moerun::Envelope;
using moerun::MessageType;

namespace {

Envelope Sample() {
  Envelope e;
  e.type = MessageType::kHeartbeat;
  e.generation = 7;
  e.job_id = "tiny-cpu";
  e.sender = "daemon:host-a";
  e.body = {{"seq", 12}, {"trainers", {{{"rank", 0}, {"pid", 4242}, {"state", "running"}}}}};
  return e;
}

std::string Message() { return EncodeEnvelope(Sample()).value(); }

std::string Why(const std::string& bytes) {
  auto d = DecodeEnvelope(bytes);
  REQUIRE_FALSE(d.ok());
  return d.status().message();
}

}  // namespace

TEST_CASE("an envelope round-trips") {
  auto d = DecodeEnvelope(Message());
  REQUIRE(d.ok());
  CHECK(d->type == MessageType::kHeartbeat);
  CHECK(d->generation == 7);
  CHECK(d->job_id == "tiny-cpu");
  CHECK(d->sender == "daemon:host-a");
  CHECK(d->body == Sample().body);
}

TEST_CASE("malformed messages are refused with the reason") {
  const std::string m = Message();
  CHECK(Why("") == "malformed message: shorter than the header");
  CHECK(Why("GET / HTTP/1.1\r\n\r\n....") == "malformed message: not a moerun message");
  std::string v = m;
  v[4] = 2;
  CHECK(Why(v) == "malformed message: protocol version 2, this build speaks 1");
  std::string t = m;
  t[6] = 99;
  CHECK(Why(t) == "malformed message: unknown type 99");
  CHECK(Why(m.substr(0, m.size() - 1)) == "malformed message: lengths do not match the size");
  CHECK(Why(m + "x") == "malformed message: lengths do not match the size");
  std::string body = m;
  body[body.size() - 2] = '#';
  CHECK(Why(body) == "malformed message: body is not a JSON object");
}

TEST_CASE("deeply nested bodies and oversized messages are refused") {
  Envelope e = Sample();
  e.body = nlohmann::json::object();
  nlohmann::json* at = &e.body;
  for (int i = 0; i < 100; ++i) at = &((*at)["x"] = nlohmann::json::object());
  auto bytes = EncodeEnvelope(e);
  REQUIRE(bytes.ok());
  CHECK(Why(bytes.value()).find("nests deeper than") != std::string::npos);
  Envelope big = Sample();
  big.body = {{"blob", std::string(moerun::kMaxMessageBytes, 'a')}};
  CHECK_FALSE(EncodeEnvelope(big).ok());
  CHECK(Why(std::string(moerun::kMaxMessageBytes + 1, 'M')).find("exceeds the limit") !=
        std::string::npos);
  Envelope long_id = Sample();
  long_id.sender = std::string(1000, 's');
  CHECK_FALSE(EncodeEnvelope(long_id).ok());
}

TEST_CASE("10,000 random mutations never crash the decoder") {
  const std::string m = Message();
  std::mt19937 rng(1);
  int accepted = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string x = m;
    const int edits = 1 + int(rng() % 8);
    for (int k = 0; k < edits; ++k) {
      switch (rng() % 4) {
        case 0:
          x[rng() % x.size()] = char(rng());
          break;
        case 1:
          x.erase(rng() % x.size(), 1 + rng() % 4);
          break;
        case 2:
          x.insert(rng() % (x.size() + 1), std::string(1 + rng() % 16, char(rng())));
          break;
        case 3:
          x.resize(rng() % (x.size() + 1));
          break;
      }
      if (x.empty()) x = "M";
    }
    auto d = DecodeEnvelope(x);
    if (d.ok()) {
      ++accepted;
      CHECK(d->body.is_object());
    } else {
      CHECK(d.status().message().rfind("malformed message: ", 0) == 0);
    }
  }
  CHECK(accepted < 10000);
}
