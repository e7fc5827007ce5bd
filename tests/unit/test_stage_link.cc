// StageLink: which calls a stage's held sends become, and the point of them: every stage's
// 1F1B and GPipe traffic completes even when a Send waits for its receiver (NCCL), where the
// same traffic without pairing deadlocks.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "worker/trainer/pipeline_schedule.h"
#include "worker/trainer/stage_link.h"

using moerun::PipelineSchedule;
using moerun::Result;
using moerun::Status;
using moerun::comm::Communicator;
using moerun::trainer::BackwardTag;
using moerun::trainer::ForwardTag;
using moerun::trainer::PipelineOps;
using moerun::trainer::StageLink;

namespace {

// One point-to-point call: a send part (peer >= 0), a receive part, or both (SendRecv).
struct Call {
  int send_peer = -1, recv_peer = -1;
  uint32_t send_tag = 0, recv_tag = 0;
};

// Records the point-to-point calls made through it (a unit-test double).
class RecordingCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status Send(int peer, uint32_t tag, const void*, size_t) override {
    calls.push_back({peer, -1, tag, 0});
    return Status::OK();
  }
  Status Recv(int peer, uint32_t tag, void*, size_t) override {
    calls.push_back({-1, peer, 0, tag});
    return Status::OK();
  }
  Status SendRecv(int send_peer, uint32_t send_tag, const void*, size_t, int recv_peer,
                  uint32_t recv_tag, void*, size_t) override {
    calls.push_back({send_peer, recv_peer, send_tag, recv_tag});
    return Status::OK();
  }
  Status AllReduceSum(float*, size_t) override { return Status::OK(); }
  Status AllReduceSum(double*, size_t) override { return Status::OK(); }
  Status AllToAllV(const void*, const std::vector<size_t>&, void*,
                   const std::vector<size_t>&) override {
    return Status::OK();
  }
  Status Broadcast(int, void*, size_t) override { return Status::OK(); }
  Status Barrier() override { return Status::OK(); }
  Result<std::unique_ptr<Communicator>> Split(const std::vector<int>&,
                                              const std::string&) override {
    return Status::Unimplemented("not in this test");
  }
  void Abort(const std::string&) override {}
  std::vector<Call> calls;
};

// The calls `stage` makes in one step, as the trainers drive the link: each op starts with
// its receive (or a Flush), and ends by handing its send to the link. `recompute` (the GPU
// step): a backward whose micro-batch was not the last forward flushes first, then runs
// that forward again, then receives. `pair` false: every send goes out at once (no
// pairing), for contrast.
std::vector<Call> StageCalls(PipelineSchedule schedule, int pipeline, int stage, int micro,
                             bool pair, bool recompute = false) {
  RecordingCommunicator comm;
  StageLink link(&comm);
  const bool first = stage == 0, last = stage == pipeline - 1;
  int64_t last_forward = -1;
  for (const auto& op : PipelineOps(schedule, pipeline, stage, micro)) {
    const int from = op.forward ? (first ? -1 : stage - 1) : (last ? -1 : stage + 1);
    const int to = op.forward ? (last ? -1 : stage + 1) : (first ? -1 : stage - 1);
    const uint32_t tag = op.forward ? ForwardTag(op.micro) : BackwardTag(op.micro);
    if (recompute && !op.forward && last_forward != op.micro) REQUIRE(link.Flush().ok());
    last_forward = op.micro;
    REQUIRE((from >= 0 ? link.Recv(from, tag, nullptr, 0) : link.Flush()).ok());
    if (to >= 0) {
      REQUIRE(link.Send(to, tag, nullptr, 0).ok());
      if (!pair) REQUIRE(link.Flush().ok());
    }
  }
  REQUIRE(link.Flush().ok());
  return comm.calls;
}

// Rendezvous semantics: a send part completes only together with the matching receive part
// of the peer's current call (same tag); a call completes when all its parts have. True when
// every stage gets through all its calls.
bool CompletesWithRendezvous(const std::vector<std::vector<Call>>& stages) {
  const size_t p = stages.size();
  std::vector<size_t> at(p, 0);
  std::vector<bool> sent(p, false), received(p, false);  // parts of each stage's current call
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t s = 0; s < p; ++s) {
      if (at[s] >= stages[s].size()) continue;
      const Call& c = stages[s][at[s]];
      if (c.send_peer >= 0 && !sent[s]) {
        const size_t q = size_t(c.send_peer);
        if (at[q] < stages[q].size()) {
          const Call& d = stages[q][at[q]];
          if (d.recv_peer == int(s) && !received[q] && d.recv_tag == c.send_tag) {
            sent[s] = received[q] = true;
            progress = true;
          }
        }
      }
    }
    for (size_t s = 0; s < p; ++s) {
      if (at[s] >= stages[s].size()) continue;
      const Call& c = stages[s][at[s]];
      if ((c.send_peer < 0 || sent[s]) && (c.recv_peer < 0 || received[s])) {
        ++at[s];
        sent[s] = received[s] = false;
        progress = true;
      }
    }
  }
  for (size_t s = 0; s < p; ++s)
    if (at[s] != stages[s].size()) return false;
  return true;
}

}  // namespace

TEST_CASE("stage link: a held send pairs with a receive from the same neighbour") {
  RecordingCommunicator comm;
  StageLink link(&comm);
  int buf = 0;
  REQUIRE(link.Send(1, 4, &buf, 4).ok());
  CHECK(comm.calls.empty());  // held
  REQUIRE(link.Recv(1, 7, &buf, 4).ok());
  REQUIRE(comm.calls.size() == 1);
  CHECK(comm.calls[0].send_peer == 1);
  CHECK(comm.calls[0].send_tag == 4);
  CHECK(comm.calls[0].recv_peer == 1);
  CHECK(comm.calls[0].recv_tag == 7);
  // Another neighbour: the send first, then the receive.
  REQUIRE(link.Send(2, 8, &buf, 4).ok());
  REQUIRE(link.Recv(0, 9, &buf, 4).ok());
  REQUIRE(comm.calls.size() == 3);
  CHECK((comm.calls[1].send_peer == 2 && comm.calls[1].recv_peer == -1));
  CHECK((comm.calls[2].send_peer == -1 && comm.calls[2].recv_peer == 0));
  // A second send pushes out the first; Flush the last; nothing twice.
  REQUIRE(link.Send(1, 10, &buf, 4).ok());
  REQUIRE(link.Send(1, 11, &buf, 4).ok());
  REQUIRE(link.Flush().ok());
  REQUIRE(link.Flush().ok());
  REQUIRE(comm.calls.size() == 5);
  CHECK(comm.calls[3].send_tag == 10);
  CHECK(comm.calls[4].send_tag == 11);
}

TEST_CASE("stage link: 1F1B and GPipe complete when sends wait for their receivers") {
  for (auto schedule : {PipelineSchedule::kOneFOneB, PipelineSchedule::kGpipe}) {
    for (int pipeline : {2, 3, 4, 8}) {
      for (int micro : {1, 2, 4, 7, 16}) {
        CAPTURE(int(schedule));
        CAPTURE(pipeline);
        CAPTURE(micro);
        for (bool recompute : {false, true}) {
          CAPTURE(recompute);
          std::vector<std::vector<Call>> paired;
          for (int s = 0; s < pipeline; ++s)
            paired.push_back(StageCalls(schedule, pipeline, s, micro, true, recompute));
          CHECK(CompletesWithRendezvous(paired));
        }
      }
    }
  }
  // Without pairing, two neighbours in 1F1B's steady state both wait in Send.
  std::vector<std::vector<Call>> unpaired;
  for (int s = 0; s < 2; ++s)
    unpaired.push_back(StageCalls(PipelineSchedule::kOneFOneB, 2, s, 4, false));
  CHECK(!CompletesWithRendezvous(unpaired));
}
