#include "worker/comm/timed_communicator.h"

#include <utility>

namespace moerun::comm {

TimedCommunicator::TimedCommunicator(std::unique_ptr<Communicator> inner,
                                     std::shared_ptr<DataPlaneWait> wait, const Clock* clock,
                                     std::shared_ptr<FlightRecorder> recorder, std::string group)
    : inner_(std::move(inner)),
      wait_(std::move(wait)),
      clock_(clock),
      recorder_(std::move(recorder)),
      group_(std::move(group)) {}

template <typename Call>
Status TimedCommunicator::Run(FlightOp op, int peer, uint64_t bytes, double* into, Call&& call) {
  ++group_seq_;
  const uint64_t seq =
      recorder_ ? recorder_->Begin(op, group_, group_seq_, rank(), size(), peer, bytes) : 0;
  const int64_t t0 = clock_->NowNs();
  Status s = call();
  *into += double(clock_->NowNs() - t0) * 1e-9;
  if (recorder_) recorder_->End(seq, s.ok());
  return s;
}

Status TimedCommunicator::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  return Run(FlightOp::kSend, peer, bytes, &wait_->pipeline_s,
             [&] { return inner_->Send(peer, tag, data, bytes); });
}

Status TimedCommunicator::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  return Run(FlightOp::kRecv, peer, bytes, &wait_->pipeline_s,
             [&] { return inner_->Recv(peer, tag, data, bytes); });
}

Status TimedCommunicator::SendRecv(int send_peer, uint32_t send_tag, const void* send,
                                   size_t send_bytes, int recv_peer, uint32_t recv_tag, void* recv,
                                   size_t recv_bytes) {
  return Run(FlightOp::kSendRecv, recv_peer, send_bytes + recv_bytes, &wait_->pipeline_s, [&] {
    return inner_->SendRecv(send_peer, send_tag, send, send_bytes, recv_peer, recv_tag, recv,
                            recv_bytes);
  });
}

Status TimedCommunicator::AllReduceSum(float* data, size_t count) {
  return Run(FlightOp::kAllReduce, -1, count * sizeof(float), &wait_->collective_s,
             [&] { return inner_->AllReduceSum(data, count); });
}

Status TimedCommunicator::AllReduceSum(double* data, size_t count) {
  return Run(FlightOp::kAllReduce, -1, count * sizeof(double), &wait_->collective_s,
             [&] { return inner_->AllReduceSum(data, count); });
}

Status TimedCommunicator::AllToAllV(const void* send, const std::vector<size_t>& send_bytes,
                                    void* recv, const std::vector<size_t>& recv_bytes) {
  uint64_t bytes = 0;
  for (size_t b : send_bytes) bytes += b;
  return Run(FlightOp::kAllToAll, -1, bytes, &wait_->collective_s,
             [&] { return inner_->AllToAllV(send, send_bytes, recv, recv_bytes); });
}

Status TimedCommunicator::Broadcast(int root, void* data, size_t bytes) {
  return Run(FlightOp::kBroadcast, root, bytes, &wait_->collective_s,
             [&] { return inner_->Broadcast(root, data, bytes); });
}

Status TimedCommunicator::Barrier() {
  return Run(FlightOp::kBarrier, -1, 0, &wait_->collective_s, [&] { return inner_->Barrier(); });
}

Result<std::unique_ptr<Communicator>> TimedCommunicator::Split(const std::vector<int>& members,
                                                               const std::string& name) {
  auto inner = inner_->Split(members, name);
  if (!inner.ok()) return inner.status();
  return std::unique_ptr<Communicator>(std::make_unique<TimedCommunicator>(
      std::move(inner.value()), wait_, clock_, recorder_, name));
}

}  // namespace moerun::comm
