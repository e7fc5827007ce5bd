// TimedCommunicator: a Communicator that measures how long its caller waits on the data plane,
// for the per-step time split (docs/architecture.md §9): compute, data-plane wait, pipeline bubble.
//   Send, Recv, SendRecv       -> wait.pipeline_s: waiting on a neighbouring stage for its
//                                 activations or gradients, or for it to take ours (an NCCL
//                                 send waits for its receiver) — the pipeline bubble (idle by
//                                 the schedule, plus the transfer itself);
//   every collective           -> wait.collective_s: token all-to-all in MoE layers,
//                                 gradient, count and norm all-reduces, barriers.
// Communicators made by Split() add to the same DataPlaneWait, so one object sums a rank's
// waits over all its groups. Times are seconds of `clock` (monotonic; a FakeClock in tests).
// With a FlightRecorder (worker/comm/flight_recorder.h), every call is also recorded there
// under the communicator's name ("world", or the name given to Split) and its own count.
// Like every Communicator, calls come from one thread at a time; the counters are not atomic.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "worker/comm/communicator.h"
#include "worker/comm/flight_recorder.h"

namespace moerun::comm {

struct DataPlaneWait {
  double pipeline_s = 0;    // in point-to-point calls
  double collective_s = 0;  // in collectives
  // The waits since `before` (an earlier copy of this one): one step's share.
  DataPlaneWait Since(const DataPlaneWait& before) const {
    return {pipeline_s - before.pipeline_s, collective_s - before.collective_s};
  }
};

class TimedCommunicator : public Communicator {
 public:
  // `clock` outlives the communicator and those Split makes.
  TimedCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<DataPlaneWait> wait,
                    const Clock* clock = SystemClock::Default(),
                    std::shared_ptr<FlightRecorder> recorder = nullptr,
                    std::string group = "world");

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
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
  void Abort(const std::string& reason) override { inner_->Abort(reason); }

 private:
  // Runs `call`, adds its time to *into and records it (op, peer, bytes) in the recorder.
  template <typename Call>
  Status Run(FlightOp op, int peer, uint64_t bytes, double* into, Call&& call);

  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<DataPlaneWait> wait_;
  const Clock* clock_;
  std::shared_ptr<FlightRecorder> recorder_;  // may be null
  std::string group_;
  uint64_t group_seq_ = 0;
};

}  // namespace moerun::comm
