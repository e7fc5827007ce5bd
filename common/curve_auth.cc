#include "common/curve_auth.h"

#include <sys/stat.h>
#include <zmq.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "common/timeouts.h"

namespace moerun {
namespace {

constexpr size_t kZ85KeyChars = 40;

bool IsZ85Key(const std::string& s) {
  if (s.size() != kZ85KeyChars) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, s.c_str()) != nullptr;
}

Result<std::string> ReadKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("key file " + path + " not found");
  std::string key;
  in >> key;
  if (!IsZ85Key(key))
    return Status::Corruption("key file " + path + ": not a 40-character Z85 CURVE key");
  return key;
}

}  // namespace

Result<CurveKeyPair> GenerateCurveKeyPair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::Unimplemented("this libzmq cannot make CURVE keys (built without libsodium?)");
  }
  return CurveKeyPair{pub, sec};
}

Status SaveCurveKeyPair(const std::string& dir, const std::string& name, const CurveKeyPair& keys) {
  const std::string pub = dir + "/" + name + ".key", sec = dir + "/" + name + ".key_secret";
  {
    std::ofstream out(pub, std::ios::trunc);
    out << keys.public_key << "\n";
    if (!out) return Status::IOError("cannot write " + pub);
  }
  // Create the secret file with 0600 before writing anything into it.
  std::ofstream(sec, std::ios::trunc).close();
  if (chmod(sec.c_str(), 0600) != 0)
    return Status::IOError("cannot restrict " + sec + " to its owner");
  std::ofstream out(sec, std::ios::trunc);
  out << keys.secret_key << "\n";
  return out ? Status::OK() : Status::IOError("cannot write " + sec);
}

Result<CurveKeyPair> LoadCurveKeyPair(const std::string& dir, const std::string& name) {
  auto pub = ReadKeyFile(dir + "/" + name + ".key");
  if (!pub.ok()) return pub.status();
  auto sec = ReadKeyFile(dir + "/" + name + ".key_secret");
  if (!sec.ok()) return sec.status();
  return CurveKeyPair{pub.value(), sec.value()};
}

Result<std::set<std::string>> LoadAuthorizedKeys(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("authorized keys " + path + " not found");
  std::set<std::string> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    // '#' is a Z85 character too: a comment starts only at a '#' that begins a word.
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line.resize(i);
        break;
      }
    }
    std::istringstream words(line);
    std::string key;
    if (!(words >> key)) continue;
    if (!IsZ85Key(key)) {
      return Status::InvalidArgument(path + ":" + std::to_string(n) +
                                     ": not a 40-character Z85 CURVE key");
    }
    keys.insert(key);
  }
  return keys;
}

ZapAuthenticator::ZapAuthenticator(zmq::context_t& ctx, std::set<std::string> allowed_z85)
    : socket_(ctx, zmq::socket_type::rep), keys_(std::move(allowed_z85)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { Loop(); });
}

ZapAuthenticator::~ZapAuthenticator() {
  stop_.store(true);
  thread_.join();
  socket_.close();
}

void ZapAuthenticator::Allow(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  keys_.insert(key);
}

void ZapAuthenticator::OnDenied(
    std::function<void(const std::string& address, const std::string& key)> cb) {
  std::lock_guard<std::mutex> lock(mu_);
  on_denied_ = std::move(cb);
}

void ZapAuthenticator::Loop() {
  while (!stop_.load()) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(kZapPollMs));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      // Request: version, request id, domain, address, identity, mechanism, credentials...
      std::vector<zmq::message_t> frames;
      do {
        frames.emplace_back();
        (void)socket_.recv(frames.back(), zmq::recv_flags::none);
      } while (frames.back().more());
      bool ok = false;
      std::string key = frames.size() >= 6 ? frames[5].to_string() : "?";
      if (frames.size() >= 7 && frames[5].to_string() == "CURVE" && frames[6].size() == 32) {
        char z85[41];
        zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32);
        key = z85;
        std::lock_guard<std::mutex> lock(mu_);
        ok = keys_.count(z85) > 0;
      }
      (ok ? allowed_ : denied_).fetch_add(1);
      if (!ok) {
        std::lock_guard<std::mutex> lock(mu_);
        if (on_denied_) on_denied_(frames.size() > 3 ? frames[3].to_string() : "?", key);
      }
      const std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(std::string(ok ? "OK" : "unauthorized key")),
                   zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::none);
    } catch (const zmq::error_t&) {
      if (stop_.load()) return;  // the context is going away
    }
  }
}

}  // namespace moerun
