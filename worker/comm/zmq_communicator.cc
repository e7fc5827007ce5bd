#include "worker/comm/zmq_communicator.h"

#include <algorithm>
#include <cstring>

namespace moerun::comm {
namespace {

constexpr uint64_t kUserTagBit = uint64_t(1) << 63;  // point-to-point tags
constexpr int kStepBits = 24;                        // steps inside one collective

uint64_t CollectiveTag(uint64_t seq, uint64_t step) { return (seq << kStepBits) | step; }

}  // namespace

ZmqCommunicator::ZmqCommunicator(std::shared_ptr<ZmqTransport> t, uint32_t group,
                                 std::vector<int> members, int me, int64_t timeout_ms)
    : transport_(std::move(t)),
      group_(group),
      members_(std::move(members)),
      me_(me),
      timeout_ms_(timeout_ms) {}

Result<std::unique_ptr<ZmqCommunicator>> ZmqCommunicator::Create(int rank,
                                                                 std::vector<std::string> endpoints,
                                                                 int64_t timeout_ms,
                                                                 std::optional<DataPlaneKey> key) {
  const int world = int(endpoints.size());
  auto t = ZmqTransport::Create(rank, std::move(endpoints), std::move(key));
  if (!t.ok()) return t.status();
  std::vector<int> all(static_cast<size_t>(world));
  for (int i = 0; i < world; ++i) all[size_t(i)] = i;
  return std::unique_ptr<ZmqCommunicator>(
      new ZmqCommunicator(t.value(), 0, std::move(all), rank, timeout_ms));
}

std::unique_ptr<ZmqCommunicator> ZmqCommunicator::Create(std::shared_ptr<ZmqTransport> t,
                                                         int64_t timeout_ms) {
  const int world = t->world_size(), rank = t->rank();
  std::vector<int> all(static_cast<size_t>(world));
  for (int i = 0; i < world; ++i) all[size_t(i)] = i;
  return std::unique_ptr<ZmqCommunicator>(
      new ZmqCommunicator(std::move(t), 0, std::move(all), rank, timeout_ms));
}

std::chrono::steady_clock::time_point ZmqCommunicator::Deadline() const {
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
}

Status ZmqCommunicator::CSend(int peer, uint64_t tag, const void* data, size_t bytes) {
  return transport_->Send(group_, members_[size_t(peer)], tag, data, bytes);
}

Status ZmqCommunicator::CRecv(int peer, uint64_t tag, void* data, size_t bytes,
                              std::chrono::steady_clock::time_point deadline) {
  return transport_->Recv(group_, members_[size_t(peer)], tag, data, bytes, deadline);
}

Status ZmqCommunicator::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  if (peer < 0 || peer >= size())
    return Status::InvalidArgument("send to member " + std::to_string(peer));
  return CSend(peer, kUserTagBit | tag, data, bytes);
}

Status ZmqCommunicator::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  if (peer < 0 || peer >= size())
    return Status::InvalidArgument("recv from member " + std::to_string(peer));
  return CRecv(peer, kUserTagBit | tag, data, bytes, Deadline());
}

template <typename V>
Status ZmqCommunicator::RingAllReduce(V* data, size_t count, std::vector<V>& incoming) {
  const int p = size();
  const uint64_t seq = NextCollective();
  if (p == 1) return transport_->aborted() ? Status::Aborted("data plane aborted") : Status::OK();
  const auto deadline = Deadline();
  // Chunk c covers [begin(c), begin(c+1)); sizes differ by at most one element.
  auto begin = [&](int c) {
    return size_t(c) * (count / size_t(p)) + std::min(size_t(c), count % size_t(p));
  };
  auto chunk = [&](int c) { return std::make_pair(begin(c), begin(c + 1) - begin(c)); };
  const int next = (me_ + 1) % p, prev = (me_ + p - 1) % p;
  incoming.resize(std::max(incoming.size(), count / size_t(p) + 1));
  uint64_t step = 0;
  // Reduce-scatter: after p−1 steps member r holds the full sum of chunk (r + 1) mod p.
  for (int s = 0; s < p - 1; ++s, ++step) {
    const auto [so, sn] = chunk(((me_ - s) % p + p) % p);
    const auto [ro, rn] = chunk(((me_ - s - 1) % p + p) % p);
    MOERUN_RETURN_IF_ERROR(CSend(next, CollectiveTag(seq, step), data + so, sn * sizeof(V)));
    MOERUN_RETURN_IF_ERROR(
        CRecv(prev, CollectiveTag(seq, step), incoming.data(), rn * sizeof(V), deadline));
    for (size_t i = 0; i < rn; ++i) data[ro + i] = incoming[i] + data[ro + i];
  }
  // All-gather the reduced chunks around the ring.
  for (int s = 0; s < p - 1; ++s, ++step) {
    const auto [so, sn] = chunk(((me_ + 1 - s) % p + p) % p);
    const auto [ro, rn] = chunk(((me_ - s) % p + p) % p);
    MOERUN_RETURN_IF_ERROR(CSend(next, CollectiveTag(seq, step), data + so, sn * sizeof(V)));
    MOERUN_RETURN_IF_ERROR(
        CRecv(prev, CollectiveTag(seq, step), data + ro, rn * sizeof(V), deadline));
  }
  return Status::OK();
}

Status ZmqCommunicator::AllReduceSum(float* data, size_t count) {
  return RingAllReduce(data, count, incoming_f_);
}

Status ZmqCommunicator::AllReduceSum(double* data, size_t count) {
  return RingAllReduce(data, count, incoming_d_);
}

Status ZmqCommunicator::AllToAllV(const void* send, const std::vector<size_t>& send_bytes,
                                  void* recv, const std::vector<size_t>& recv_bytes) {
  const int p = size();
  if (int(send_bytes.size()) != p || int(recv_bytes.size()) != p) {
    return Status::InvalidArgument("alltoallv: split vectors must have one entry per member");
  }
  const uint64_t tag = CollectiveTag(NextCollective(), 0);
  const auto deadline = Deadline();
  std::vector<size_t> soff(size_t(p) + 1, 0), roff(size_t(p) + 1, 0);
  for (int j = 0; j < p; ++j) {
    soff[size_t(j) + 1] = soff[size_t(j)] + send_bytes[size_t(j)];
    roff[size_t(j) + 1] = roff[size_t(j)] + recv_bytes[size_t(j)];
  }
  const auto* s = static_cast<const uint8_t*>(send);
  auto* r = static_cast<uint8_t*>(recv);
  for (int k = 1; k < p; ++k) {  // start with the next member so links load evenly
    const int j = (me_ + k) % p;
    MOERUN_RETURN_IF_ERROR(CSend(j, tag, s + soff[size_t(j)], send_bytes[size_t(j)]));
  }
  if (send_bytes[size_t(me_)] != recv_bytes[size_t(me_)]) {
    return Status::InvalidArgument("alltoallv: this member sends itself " +
                                   std::to_string(send_bytes[size_t(me_)]) + " bytes but expects " +
                                   std::to_string(recv_bytes[size_t(me_)]));
  }
  if (recv_bytes[size_t(me_)] > 0)
    std::memcpy(r + roff[size_t(me_)], s + soff[size_t(me_)], recv_bytes[size_t(me_)]);
  for (int k = 1; k < p; ++k) {
    const int j = (me_ + p - k) % p;
    MOERUN_RETURN_IF_ERROR(CRecv(j, tag, r + roff[size_t(j)], recv_bytes[size_t(j)], deadline));
  }
  return Status::OK();
}

Status ZmqCommunicator::Broadcast(int root, void* data, size_t bytes) {
  const uint64_t tag = CollectiveTag(NextCollective(), 0);
  if (me_ == root) {
    for (int j = 0; j < size(); ++j)
      if (j != root) MOERUN_RETURN_IF_ERROR(CSend(j, tag, data, bytes));
    return Status::OK();
  }
  return CRecv(root, tag, data, bytes, Deadline());
}

Status ZmqCommunicator::Barrier() {
  const uint64_t seq = NextCollective();
  const auto deadline = Deadline();
  if (me_ == 0) {
    for (int j = 1; j < size(); ++j)
      MOERUN_RETURN_IF_ERROR(CRecv(j, CollectiveTag(seq, 0), nullptr, 0, deadline));
    for (int j = 1; j < size(); ++j)
      MOERUN_RETURN_IF_ERROR(CSend(j, CollectiveTag(seq, 1), nullptr, 0));
    return Status::OK();
  }
  MOERUN_RETURN_IF_ERROR(CSend(0, CollectiveTag(seq, 0), nullptr, 0));
  return CRecv(0, CollectiveTag(seq, 1), nullptr, 0, deadline);
}

Result<std::unique_ptr<Communicator>> ZmqCommunicator::Split(const std::vector<int>& members,
                                                             const std::string& name) {
  std::vector<int> world;
  int me = -1;
  for (size_t i = 0; i < members.size(); ++i) {
    const int m = members[i];
    if (m < 0 || m >= size() || (i > 0 && m <= members[i - 1])) {
      return Status::InvalidArgument("split '" + name +
                                     "': members must be ascending ranks of the communicator");
    }
    if (m == me_) me = int(i);
    world.push_back(members_[size_t(m)]);
  }
  if (me < 0) return Status::InvalidArgument("split '" + name + "': this rank is not a member");
  // Same name, parent and members on every member => same group id, without talking.
  uint32_t h = 2166136261u;
  auto mix = [&h](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 16777619u;
  };
  mix(&group_, sizeof group_);
  mix(name.data(), name.size());
  mix(world.data(), world.size() * sizeof(int));
  if (h == 0) h = 1;  // 0 is the world group
  return std::unique_ptr<Communicator>(
      new ZmqCommunicator(transport_, h, std::move(world), me, timeout_ms_));
}

}  // namespace moerun::comm
