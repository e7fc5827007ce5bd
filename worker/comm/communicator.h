// Communicator: the data plane between trainer ranks (docs/architecture.md §5) — point-to-point
// tensors for pipeline stages, all-to-all for expert dispatch/combine, all-reduce for gradients.
//
// Semantics every implementation keeps:
//  * Every call either completes or returns an error; none blocks longer than the
//    communicator's timeout (TimedOut names the peer waited for). A dead or frozen peer
//    therefore turns into an error on every rank that needs it.
//  * Abort() may be called from any thread: blocked and later calls return Aborted.
//  * Collectives are called by every member in the same order (like MPI and NCCL).
//  * Reductions run in a fixed order for a given group, so results are deterministic.
// Ranks are 0..size()-1 within this communicator. Calls are made from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace moerun::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Blocking point-to-point with a user tag; messages between a pair with the same tag
  // arrive in order. Recv requires exactly `bytes` bytes.
  virtual Status Send(int peer, uint32_t tag, const void* data, size_t bytes) = 0;
  virtual Status Recv(int peer, uint32_t tag, void* data, size_t bytes) = 0;
  // Send to send_peer and receive from recv_peer; both have completed on return. Two
  // neighbours sending to each other at once must use it (a pipeline's steady state): it
  // pairs up whether or not the transport's Send waits for the receiver (NCCL issues both in
  // one group). The default, Send then Recv, is right where sends are buffered (ZeroMQ).
  virtual Status SendRecv(int send_peer, uint32_t send_tag, const void* send, size_t send_bytes,
                          int recv_peer, uint32_t recv_tag, void* recv, size_t recv_bytes) {
    MOERUN_RETURN_IF_ERROR(Send(send_peer, send_tag, send, send_bytes));
    return Recv(recv_peer, recv_tag, recv, recv_bytes);
  }

  // data[i] = Σ over ranks of data[i] (ring reduce-scatter + all-gather).
  virtual Status AllReduceSum(float* data, size_t count) = 0;
  // The same in double: exact counts to 2^53, and norms and losses without fp32 rounding.
  virtual Status AllReduceSum(double* data, size_t count) = 0;

  // Rank r sends send_bytes[j] bytes (contiguous, in peer order, starting at `send`) to each
  // rank j and receives recv_bytes[j] bytes from each rank j into `recv` (same layout).
  // Any split may be zero. Both vectors have size() entries.
  virtual Status AllToAllV(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                           const std::vector<size_t>& recv_bytes) = 0;

  virtual Status Broadcast(int root, void* data, size_t bytes) = 0;
  virtual Status Barrier() = 0;

  // A communicator over `members` (ranks of this one, ascending, including this rank). Every
  // member must call it with the same members and name; the name keeps two groups over the
  // same members apart.
  virtual Result<std::unique_ptr<Communicator>> Split(const std::vector<int>& members,
                                                      const std::string& name) = 0;

  // Fails every blocked and later call with Aborted(reason). Thread-safe; idempotent.
  virtual void Abort(const std::string& reason) = 0;
};

}  // namespace moerun::comm
