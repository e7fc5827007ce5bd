// SoloCommunicator: the communicator of a world of one process. Collectives are identities,
// so the same trainer code runs alone without opening a socket. Point-to-point has no peer
// and fails.
#pragma once

#include <cstring>

#include "worker/comm/communicator.h"

namespace moerun::comm {

class SoloCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status Send(int, uint32_t, const void*, size_t) override { return NoPeer(); }
  Status Recv(int, uint32_t, void*, size_t) override { return NoPeer(); }
  Status AllReduceSum(float*, size_t) override { return Check(); }
  Status AllReduceSum(double*, size_t) override { return Check(); }
  Status AllToAllV(const void* send, const std::vector<size_t>& sb, void* recv,
                   const std::vector<size_t>& rb) override {
    if (sb.size() != 1 || rb.size() != 1 || sb[0] != rb[0]) {
      return Status::InvalidArgument("alltoallv: a world of one sends itself what it receives");
    }
    if (sb[0] > 0) std::memcpy(recv, send, sb[0]);
    return Check();
  }
  Status Broadcast(int, void*, size_t) override { return Check(); }
  Status Barrier() override { return Check(); }
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>& members,
                                              const std::string&) override {
    if (members != std::vector<int>{0}) return Status::InvalidArgument("split: a world of one");
    return std::unique_ptr<Communicator>(new SoloCommunicator());
  }
  void Abort(const std::string& reason) override { aborted_ = reason.empty() ? "aborted" : reason; }

 private:
  Status NoPeer() const { return Status::InvalidArgument("point-to-point in a world of one"); }
  Status Check() const { return aborted_.empty() ? Status::OK() : Status::Aborted(aborted_); }
  std::string aborted_;
};

}  // namespace moerun::comm
