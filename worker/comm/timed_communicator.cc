#include "worker/comm/timed_communicator.h"

#include <utility>

namespace moerun::comm {
namespace {

// Runs `call` and adds the time it took on `clock` to `*into` (seconds).
template <typename Call>
auto Timed(const Clock* clock, double* into, Call&& call) {
  const int64_t t0 = clock->NowNs();
  auto result = call();
  *into += double(clock->NowNs() - t0) * 1e-9;
  return result;
}

}  // namespace

TimedCommunicator::TimedCommunicator(std::unique_ptr<Communicator> inner,
                                     std::shared_ptr<DataPlaneWait> wait, const Clock* clock)
    : inner_(std::move(inner)), wait_(std::move(wait)), clock_(clock) {}

Status TimedCommunicator::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  return Timed(clock_, &wait_->pipeline_s, [&] { return inner_->Send(peer, tag, data, bytes); });
}

Status TimedCommunicator::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  return Timed(clock_, &wait_->pipeline_s, [&] { return inner_->Recv(peer, tag, data, bytes); });
}

Status TimedCommunicator::SendRecv(int send_peer, uint32_t send_tag, const void* send,
                                   size_t send_bytes, int recv_peer, uint32_t recv_tag, void* recv,
                                   size_t recv_bytes) {
  return Timed(clock_, &wait_->pipeline_s, [&] {
    return inner_->SendRecv(send_peer, send_tag, send, send_bytes, recv_peer, recv_tag, recv,
                            recv_bytes);
  });
}

Status TimedCommunicator::AllReduceSum(float* data, size_t count) {
  return Timed(clock_, &wait_->collective_s, [&] { return inner_->AllReduceSum(data, count); });
}

Status TimedCommunicator::AllReduceSum(double* data, size_t count) {
  return Timed(clock_, &wait_->collective_s, [&] { return inner_->AllReduceSum(data, count); });
}

Status TimedCommunicator::AllToAllV(const void* send, const std::vector<size_t>& send_bytes,
                                    void* recv, const std::vector<size_t>& recv_bytes) {
  return Timed(clock_, &wait_->collective_s,
               [&] { return inner_->AllToAllV(send, send_bytes, recv, recv_bytes); });
}

Status TimedCommunicator::Broadcast(int root, void* data, size_t bytes) {
  return Timed(clock_, &wait_->collective_s, [&] { return inner_->Broadcast(root, data, bytes); });
}

Status TimedCommunicator::Barrier() {
  return Timed(clock_, &wait_->collective_s, [&] { return inner_->Barrier(); });
}

Result<std::unique_ptr<Communicator>> TimedCommunicator::Split(const std::vector<int>& members,
                                                               const std::string& name) {
  auto inner = inner_->Split(members, name);
  if (!inner.ok()) return inner.status();
  return std::unique_ptr<Communicator>(
      std::make_unique<TimedCommunicator>(std::move(inner.value()), wait_, clock_));
}

}  // namespace moerun::comm
