// NcclCommunicator: the GPU data plane (Communicator over NCCL). Every data pointer given to
// it is device memory on this rank's GPU. Each call enqueues NCCL work on the
// communicator's own stream and waits for it by polling (cudaStreamQuery and
// ncclCommGetAsyncError, every kNcclPollUs): a call that does not finish within the
// timeout, an asynchronous NCCL error, or Abort() from another thread aborts the NCCL
// communicator (ncclCommAbort) and returns an error, so a dead peer never hangs a rank.
// The communicator is created non-blocking (config.blocking = 0) so init and abort obey the
// same rules.
//
// Differences from the ZeroMQ communicator: tags are not sent (messages between a pair match
// in call order, which the callers keep); a Send may wait for its receiver, so neighbours
// exchanging at once use SendRecv; Split is collective over the parent
// (ncclCommSplit) — every rank of the parent calls the same sequence of Splits, members of
// one group passing the same name; AllToAllV is a grouped ncclSend/ncclRecv.
// Built only with CUDA; compiled in every such build, exercised by tests/gpu on a GPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/timeouts.h"
#include "worker/comm/communicator.h"

namespace moerun::comm {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap` (any communicator: ZeroMQ or a world of one): rank 0 makes
  // the NCCL unique id and broadcasts it. `device` is this rank's CUDA device.
  static Result<std::unique_ptr<NcclCommunicator>> Create(Communicator* bootstrap, int device,
                                                          int64_t timeout_ms);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status Send(int peer, uint32_t tag, const void* data, size_t bytes) override;
  Status Recv(int peer, uint32_t tag, void* data, size_t bytes) override;
  Status SendRecv(int send_peer, uint32_t send_tag, const void* send, size_t send_bytes,
                  int recv_peer, uint32_t recv_tag, void* recv, size_t recv_bytes) override;
  Status AllReduceSum(float* data, size_t count) override;
  Status AllReduceSum(double* data, size_t count) override;
  Status AllToAllV(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                   const std::vector<size_t>& recv_bytes) override;
  Status Broadcast(int root, void* data, size_t bytes) override;
  Status Barrier() override;
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>& members,
                                              const std::string& name) override;
  void Abort(const std::string& reason) override;

 private:
  struct State;  // NCCL and CUDA handles, kept out of this header
  NcclCommunicator(std::unique_ptr<State> state, int rank, int size, int64_t timeout_ms);
  // Waits for the work just enqueued (or for init/split to finish); aborts on failure.
  Status Wait(const char* what);
  Status Enqueued(int nccl_result, const char* what);

  std::unique_ptr<State> state_;
  int rank_, size_;
  int64_t timeout_ms_;
  std::atomic<bool> abort_requested_{false};
  std::string abort_reason_;
};

}  // namespace moerun::comm
