// ZmqCommunicator: the CPU data plane (Communicator over ZmqTransport). Algorithms:
//  * AllReduceSum: ring reduce-scatter then ring all-gather (2·(p−1)/p of the data crosses
//    each link, the bandwidth-optimal schedule); chunk c is summed in ring order starting
//    at member c, so the result is deterministic.
//  * AllToAllV: every member sends its p−1 blocks, then receives p−1 blocks.
//  * Broadcast: the root sends to every member. Barrier: gather to member 0, then release.
// Each collective call takes a fresh sequence number, which with the step inside the
// algorithm forms the message tag; point-to-point tags live in a separate tag space.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/timeouts.h"
#include "worker/comm/communicator.h"
#include "worker/comm/zmq_transport.h"

namespace moerun::comm {

class ZmqCommunicator : public Communicator {
 public:
  // The world communicator of this process.
  // key: the data plane's CURVE pair (zmq_transport.h); none for plain sockets.
  static Result<std::unique_ptr<ZmqCommunicator>> Create(int rank,
                                                         std::vector<std::string> endpoints,
                                                         int64_t timeout_ms = kDataPlaneTimeoutMs,
                                                         std::optional<DataPlaneKey> key = {});

  // The world communicator over a transport that is already bound (and has its peers' table).
  static std::unique_ptr<ZmqCommunicator> Create(std::shared_ptr<ZmqTransport> transport,
                                                 int64_t timeout_ms = kDataPlaneTimeoutMs);

  int rank() const override { return me_; }
  int size() const override { return int(members_.size()); }
  Status Send(int peer, uint32_t tag, const void* data, size_t bytes) override;
  Status Recv(int peer, uint32_t tag, void* data, size_t bytes) override;
  Status AllReduceSum(float* data, size_t count) override;
  Status AllReduceSum(double* data, size_t count) override;
  Status AllToAllV(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                   const std::vector<size_t>& recv_bytes) override;
  Status Broadcast(int root, void* data, size_t bytes) override;
  Status Barrier() override;
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>& members,
                                              const std::string& name) override;
  void Abort(const std::string& reason) override { transport_->Abort(reason); }

  const std::vector<int>& world_ranks() const { return members_; }

 private:
  ZmqCommunicator(std::shared_ptr<ZmqTransport> t, uint32_t group, std::vector<int> members, int me,
                  int64_t timeout_ms);
  std::chrono::steady_clock::time_point Deadline() const;
  template <typename V>
  Status RingAllReduce(V* data, size_t count, std::vector<V>& incoming);
  uint64_t NextCollective() { return ++collective_seq_; }
  Status CSend(int peer, uint64_t tag, const void* data, size_t bytes);
  Status CRecv(int peer, uint64_t tag, void* data, size_t bytes,
               std::chrono::steady_clock::time_point deadline);

  std::shared_ptr<ZmqTransport> transport_;
  uint32_t group_;
  std::vector<int> members_;  // world rank of each member
  int me_;
  int64_t timeout_ms_;
  uint64_t collective_seq_ = 0;
  std::vector<float> incoming_f_;  // all-reduce receive buffers, kept between calls
  std::vector<double> incoming_d_;
};

}  // namespace moerun::comm
