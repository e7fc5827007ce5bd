#include "worker/comm/zmq_transport.h"

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
  uint64_t bytes;
};
static_assert(sizeof(WireHeader) == 32);

}  // namespace

ZmqTransport::ZmqTransport(int rank, std::vector<std::string> endpoints)
    : rank_(rank), endpoints_(std::move(endpoints)), ctx_(1), pull_(ctx_, zmq::socket_type::pull) {
  push_.resize(endpoints_.size());
}

ZmqTransport::~ZmqTransport() {
  // Flush what is queued for live peers, bounded so a dead peer cannot keep us alive.
  const int linger = aborted_.load() || timed_out_ ? 0 : kCloseLingerMs;
  for (auto& s : push_) {
    if (!s) continue;
    s->set(zmq::sockopt::linger, linger);
    s->close();
  }
  pull_.close();
  ctx_.close();
}

Result<std::shared_ptr<ZmqTransport>> ZmqTransport::Create(int rank,
                                                           std::vector<std::string> endpoints) {
  if (rank < 0 || rank >= int(endpoints.size())) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " outside world of " +
                                   std::to_string(endpoints.size()));
  }
  std::shared_ptr<ZmqTransport> t(new ZmqTransport(rank, std::move(endpoints)));
  try {
    t->pull_.set(zmq::sockopt::rcvhwm, 0);
    t->pull_.set(zmq::sockopt::linger, 0);
    t->pull_.bind(t->endpoints_[size_t(rank)]);
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
    s->set(zmq::sockopt::sndhwm, 0);  // never block a send: the receiver's timeout decides
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
  if (dest == rank_) {
    mailbox_[Key{group, rank_, tag}].emplace_back(data, bytes);
    return Status::OK();
  }
  WireHeader h{kWireVersion, 0, group, rank_, 0, tag, bytes};
  try {
    zmq::socket_t& s = PeerSocket(dest);
    s.send(zmq::buffer(&h, sizeof h), zmq::send_flags::sndmore);
    s.send(zmq::message_t(data, bytes), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("data plane: send to rank " + std::to_string(dest) +
                               " failed: " + e.what());
  }
  return Status::OK();
}

Status ZmqTransport::Recv(uint32_t group, int src, uint64_t tag, void* data, size_t bytes,
                          std::chrono::steady_clock::time_point deadline) {
  const Key want{group, src, tag};
  auto take = [&](zmq::message_t& m) -> Status {
    if (m.size() != bytes) {
      return Status::Internal("data plane: rank " + std::to_string(src) + " sent " +
                              std::to_string(m.size()) + " bytes, expected " +
                              std::to_string(bytes));
    }
    if (bytes > 0) std::memcpy(data, m.data(), bytes);
    return Status::OK();
  };
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    auto it = mailbox_.find(want);
    if (it != mailbox_.end() && !it->second.empty()) {
      zmq::message_t m = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) mailbox_.erase(it);
      return take(m);
    }
    if (aborted_.load()) return AbortedStatus();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
      timed_out_ = true;
      return Status::TimedOut("data plane: waited " + std::to_string(waited) + " ms for rank " +
                              std::to_string(src) + " (group " + std::to_string(group) + ", tag " +
                              std::to_string(tag) + "); the peer is dead, frozen or partitioned");
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    zmq::pollitem_t item{pull_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(std::min<long>(kPollSliceMs, long(left) + 1)));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      zmq::message_t head, body;
      (void)pull_.recv(head, zmq::recv_flags::dontwait);
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
      if (h.version != kWireVersion || h.bytes != body.size() || h.source < 0 ||
          h.source >= world_size()) {
        ++malformed_;
        continue;
      }
      mailbox_[Key{h.group, h.source, h.tag}].push_back(std::move(body));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return Status::Unavailable(std::string("data plane: receive failed: ") + e.what());
    }
  }
}

}  // namespace moerun::comm
