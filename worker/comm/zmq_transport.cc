#include "worker/comm/zmq_transport.h"

#include <algorithm>
#include <cstring>

namespace moerun::comm {
namespace {

// Frame 0 of every message. Fixed layout, little-endian (every host here is).
struct WireHeader {
  uint16_t version;
  uint16_t reserved;
  uint32_t group;
  int32_t source;
  uint32_t pad;
  uint64_t tag;
  uint64_t bytes;   // the whole message
  uint64_t offset;  // of this chunk
};
static_assert(sizeof(WireHeader) == 40);

}  // namespace

ZmqTransport::ZmqTransport(int rank, std::vector<std::string> endpoints)
    : rank_(rank), endpoints_(std::move(endpoints)), ctx_(1), pull_(ctx_, zmq::socket_type::pull) {
  push_.resize(endpoints_.size());
}

ZmqTransport::~ZmqTransport() {
  // Flush what is queued for live peers, bounded so a dead peer cannot keep us alive.
  const int linger = aborted_.load() || timed_out_ ? 0 : kDataPlaneCloseLingerMs;
  for (auto& s : push_) {
    if (!s) continue;
    s->set(zmq::sockopt::linger, linger);
    s->close();
  }
  pull_.close();
  zap_.reset();  // its socket lives in ctx_
  ctx_.close();
}

void ZmqTransport::ConnectPeers() {
  if (world_size() > kDataPlaneEagerConnectRanks) return;
  for (int r = 0; r < world_size(); ++r)
    if (r != rank_) PeerSocket(r);
}

uint64_t ZmqTransport::refused() const { return zap_ ? zap_->denied() : 0; }

void ZmqTransport::OnRefused(
    std::function<void(const std::string& address, const std::string& key)> cb) {
  if (zap_) zap_->OnDenied(std::move(cb));
}

Status ZmqTransport::SetEndpoints(std::vector<std::string> endpoints) {
  if (endpoints.size() != endpoints_.size() || endpoints[size_t(rank_)] != local_endpoint()) {
    return Status::InvalidArgument("data plane: the rendezvous table (" +
                                   std::to_string(endpoints.size()) + " ranks) does not list " +
                                   local_endpoint() + " as rank " + std::to_string(rank_));
  }
  endpoints_ = std::move(endpoints);
  return Status::OK();
}

Result<std::shared_ptr<ZmqTransport>> ZmqTransport::Create(int rank,
                                                           std::vector<std::string> endpoints,
                                                           std::optional<DataPlaneKey> key) {
  if (rank < 0 || rank >= int(endpoints.size())) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " outside world of " +
                                   std::to_string(endpoints.size()));
  }
  std::shared_ptr<ZmqTransport> t(new ZmqTransport(rank, std::move(endpoints)));
  try {
    if (key) {
      if (key->public_key.size() != 40 || key->secret_key.size() != 40) {
        return Status::InvalidArgument("data plane: the generation's key is not a Z85 CURVE pair");
      }
      t->key_ = std::move(key);
      // Before the bind: libzmq asks the handler about every connection to a CURVE server.
      t->zap_ =
          std::make_unique<ZapAuthenticator>(t->ctx_, std::set<std::string>{t->key_->public_key});
      t->pull_.set(zmq::sockopt::curve_server, 1);
      t->pull_.set(zmq::sockopt::curve_secretkey, t->key_->secret_key);
      t->pull_.set(zmq::sockopt::zap_domain, "moerun-data-plane");
    }
    t->pull_.set(zmq::sockopt::rcvhwm, 0);
    t->pull_.set(zmq::sockopt::rcvbuf, kDataPlaneSocketBufferBytes);
    t->pull_.set(zmq::sockopt::linger, 0);
    t->pull_.bind(t->endpoints_[size_t(rank)]);
    t->endpoints_[size_t(rank)] = t->pull_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("data plane: cannot bind " + t->endpoints_[size_t(rank)] + ": " +
                               e.what());
  }
  return t;
}

zmq::socket_t& ZmqTransport::PeerSocket(int dest) {
  auto& s = push_[size_t(dest)];
  if (!s) {
    s = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::push);
    s->set(zmq::sockopt::sndhwm, 0);
    s->set(zmq::sockopt::sndbuf,
           kDataPlaneSocketBufferBytes);  // never block a send: the receiver's timeout decides
    if (key_) {
      s->set(zmq::sockopt::curve_serverkey, key_->public_key);
      s->set(zmq::sockopt::curve_publickey, key_->public_key);
      s->set(zmq::sockopt::curve_secretkey, key_->secret_key);
    }
    s->connect(endpoints_[size_t(dest)]);
  }
  return *s;
}

Status ZmqTransport::AbortedStatus() const {
  std::lock_guard<std::mutex> lock(abort_mu_);
  return Status::Aborted("data plane aborted: " + abort_reason_);
}

void ZmqTransport::Abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(abort_mu_);
  if (aborted_.load()) return;
  abort_reason_ = reason;
  aborted_.store(true);
}

Status ZmqTransport::Send(uint32_t group, int dest, uint64_t tag, const void* data, size_t bytes) {
  if (aborted_.load()) return AbortedStatus();
  if (dest < 0 || dest >= world_size())
    return Status::InvalidArgument("send to rank " + std::to_string(dest));
  const auto* p = static_cast<const uint8_t*>(data);
  if (dest == rank_) {
    Pending m;
    m.chunks.emplace_back(p, bytes);
    m.have = m.total = bytes;
    mailbox_[Key{group, rank_, tag}].push_back(std::move(m));
    return Status::OK();
  }
  try {
    zmq::socket_t& s = PeerSocket(dest);
    size_t off = 0;
    do {  // at least one chunk, so empty messages travel too
      const size_t n = std::min(kDataPlaneChunkBytes, bytes - off);
      WireHeader h{kWireVersion, 0, group, rank_, 0, tag, bytes, off};
      s.send(zmq::buffer(&h, sizeof h), zmq::send_flags::sndmore);
      s.send(zmq::message_t(p + off, n), zmq::send_flags::none);
      off += n;
    } while (off < bytes);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("data plane: send to rank " + std::to_string(dest) +
                               " failed: " + e.what());
  }
  return Status::OK();
}

Status ZmqTransport::Recv(uint32_t group, int src, uint64_t tag, void* data, size_t bytes,
                          std::chrono::steady_clock::time_point deadline) {
  const Key want{group, src, tag};
  std::deque<Pending>& queue = mailbox_[want];  // std::map references stay valid
  auto* out = static_cast<uint8_t*>(data);
  // The front message of `queue` is placed straight into `data` once this call owns it:
  // chunks parked earlier are copied now, later chunks as they arrive (no second buffer).
  bool placing = false;
  auto finish = [&](Status st) {
    if (!st.ok() && placing && !queue.empty()) queue.front().lost = true;  // half in `data`
    if (queue.empty()) mailbox_.erase(want);
    return st;
  };
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    if (!queue.empty()) {
      Pending& m = queue.front();
      if (m.lost) {
        queue.pop_front();
        return finish(Status::Internal("data plane: a message from rank " + std::to_string(src) +
                                       " was lost when an earlier receive failed"));
      }
      if (!placing) {
        if (m.total != bytes) {
          return finish(Status::Internal("data plane: rank " + std::to_string(src) + " sent " +
                                         std::to_string(m.total) + " bytes, expected " +
                                         std::to_string(bytes)));
        }
        uint64_t off = 0;
        for (const auto& c : m.chunks) {
          if (c.size() > 0) std::memcpy(out + off, c.data(), c.size());
          off += c.size();
        }
        m.chunks.clear();
        placing = true;
      }
      if (m.have == m.total) {
        queue.pop_front();
        placing = false;
        return finish(Status::OK());
      }
    }
    if (aborted_.load()) return finish(AbortedStatus());
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
      timed_out_ = true;
      return finish(Status::TimedOut("data plane: waited " + std::to_string(waited) +
                                     " ms for rank " + std::to_string(src) + " (group " +
                                     std::to_string(group) + ", tag " + std::to_string(tag) +
                                     "); the peer is dead, frozen or partitioned"));
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    try {
      // A blocking receive bounded by the slice: cheaper than poll + receive per chunk.
      pull_.set(zmq::sockopt::rcvtimeo, int(std::min<long>(kDataPlanePollSliceMs, long(left) + 1)));
      zmq::message_t head, body;
      if (!pull_.recv(head)) continue;  // the slice ended without a message
      if (!head.more()) {
        ++malformed_;
        continue;
      }
      (void)pull_.recv(body, zmq::recv_flags::dontwait);
      if (body.more()) {  // more than two frames: drain the rest, drop the message
        zmq::message_t extra;
        do {
          (void)pull_.recv(extra, zmq::recv_flags::dontwait);
        } while (extra.more());
        ++malformed_;
        continue;
      }
      WireHeader h;
      if (head.size() != sizeof h) {
        ++malformed_;
        continue;
      }
      std::memcpy(&h, head.data(), sizeof h);
      if (h.version != kWireVersion || h.source < 0 || h.source >= world_size() ||
          h.offset + body.size() > h.bytes) {
        ++malformed_;
        continue;
      }
      // Chunks of one (group, source, tag) arrive in order: append to the message in progress.
      auto& q = mailbox_[Key{h.group, h.source, h.tag}];
      if (q.empty() || q.back().have == q.back().total) {
        if (h.offset != 0) {
          ++malformed_;
          continue;
        }
        q.emplace_back();
        q.back().total = h.bytes;
      }
      Pending& m = q.back();
      if (h.offset != m.have || h.bytes != m.total) {
        ++malformed_;
        continue;
      }
      m.have += body.size();
      if (placing && &q == &queue && q.size() == 1) {
        if (body.size() > 0) std::memcpy(out + h.offset, body.data(), body.size());
      } else {
        m.chunks.push_back(std::move(body));
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return Status::Unavailable(std::string("data plane: receive failed: ") + e.what());
    }
  }
}

}  // namespace moerun::comm
