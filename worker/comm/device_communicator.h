// Communicators over device memory for a group of GPU trainer ranks (every data pointer given
// to them is on this rank's GPU):
//  * NcclCommunicator, when every member of the group has a GPU of its own;
//  * HostStagedCommunicator otherwise — two ranks sharing one GPU, which NCCL refuses
//    ("duplicate GPU"): the group's host communicator (ZeroMQ), each call's data copied
//    through pinned host memory. Slower, and the same results.
// MakeDeviceCommunicator picks one for a group, the same on every member. Built only with
// CUDA.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/timed_communicator.h"

namespace moerun::comm {

class HostStagedCommunicator : public Communicator {
 public:
  // `host` (not owned) is the group over host memory; it outlives this one. The caller has
  // finished writing the data it passes (its stream synchronized); every call has finished
  // writing the data it returns.
  explicit HostStagedCommunicator(Communicator* host) : host_(host) {}
  ~HostStagedCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  Status Send(int peer, uint32_t tag, const void* data, size_t bytes) override;
  Status Recv(int peer, uint32_t tag, void* data, size_t bytes) override;
  Status SendRecv(int send_peer, uint32_t send_tag, const void* send, size_t send_bytes,
                  int recv_peer, uint32_t recv_tag, void* recv, size_t recv_bytes) override;
  Status AllReduceSum(float* data, size_t count) override;
  Status AllReduceSum(double* data, size_t count) override;
  Status AllToAllV(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                   const std::vector<size_t>& recv_bytes) override;
  Status Broadcast(int root, void* data, size_t bytes) override;
  Status Barrier() override { return host_->Barrier(); }
  // Unimplemented: make another device communicator over a split of the host group.
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>& members,
                                              const std::string& name) override;
  void Abort(const std::string& reason) override { host_->Abort(reason); }

 private:
  // Pinned host staging of at least `bytes`: 0 the outgoing side, 1 the incoming side.
  Result<uint8_t*> Staging(int which, size_t bytes);
  Status ToHost(void* host, const void* device, size_t bytes);
  Status ToDevice(void* device, const void* host, size_t bytes);
  template <typename V>
  Status StagedAllReduce(V* data, size_t count);

  Communicator* host_;
  uint8_t* staging_[2] = {nullptr, nullptr};
  size_t capacity_[2] = {0, 0};
};

// A device communicator over the members of `host_group` (collective over it): NCCL when
// every member's (host, device) differs, else host-staged. `what` names the group in errors
// and in *transport ("nccl" or "host-staged"). NCCL's waits are added to `wait` (may be null);
// the host-staged one's already are, when host_group is a TimedCommunicator.
Result<std::unique_ptr<Communicator>> MakeDeviceCommunicator(Communicator* host_group, int device,
                                                             int64_t timeout_ms,
                                                             std::shared_ptr<DataPlaneWait> wait,
                                                             const std::string& what,
                                                             std::string* transport);

}  // namespace moerun::comm
