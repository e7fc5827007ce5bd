// StageLink: a pipeline stage's messages to its neighbouring stages (activations forward,
// their gradients back). A send is held until the stage's next receive or Flush: when that
// receive is from the same neighbour, both go out as one SendRecv. That pairing is what
// keeps 1F1B from deadlocking on a transport whose Send waits for its receiver (NCCL: in the
// steady state two neighbours send to each other at once); on ZeroMQ it changes nothing.
// The caller keeps a held send's buffer unchanged until the next Recv or Flush returns: a
// pipeline op starts with its receive, or with Flush when it has none, before it computes.
// Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "worker/comm/communicator.h"

namespace moerun::trainer {

class StageLink {
 public:
  explicit StageLink(comm::Communicator* comm) : comm_(comm) {}
  ~StageLink() = default;  // a send still held is dropped: call Flush at the end of a step

  // Holds the send (a send already held goes out first).
  Status Send(int peer, uint32_t tag, const void* data, size_t bytes);
  // Receives, together with the held send when it goes to `peer`, else after it.
  Status Recv(int peer, uint32_t tag, void* data, size_t bytes);
  // Sends what is held, if anything.
  Status Flush();

 private:
  comm::Communicator* comm_;
  bool held_ = false;
  int peer_ = -1;
  uint32_t tag_ = 0;
  const void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace moerun::trainer
