// PipelineOps: every micro-batch forward then backward once, in the order each schedule
// promises, and neighbouring stages' sends and receives pairing up without a deadlock.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "worker/trainer/pipeline_schedule.h"

using moerun::PipelineSchedule;
using moerun::trainer::MicroBatchesInFlight;
using moerun::trainer::PipelineOp;
using moerun::trainer::PipelineOps;

namespace {

std::string Text(const std::vector<PipelineOp>& ops) {
  std::string s;
  for (const auto& op : ops) s += (op.forward ? "F" : "B") + std::to_string(op.micro) + " ";
  return s;
}

// Runs every stage's ops as blocking receives and buffered sends (the ZeroMQ data plane):
// stage s's forward m waits for stage s-1's forward m, its backward m for stage s+1's
// backward m. True when every op of every stage completes.
bool RunsToCompletion(PipelineSchedule schedule, int64_t pipeline, int64_t micro) {
  std::vector<std::vector<PipelineOp>> ops;
  for (int64_t s = 0; s < pipeline; ++s) ops.push_back(PipelineOps(schedule, pipeline, s, micro));
  std::vector<size_t> next(size_t(pipeline), 0);
  std::map<std::tuple<int64_t, bool, int64_t>, bool> done;  // (stage, forward, micro)
  for (bool progress = true; progress;) {
    progress = false;
    for (int64_t s = 0; s < pipeline; ++s) {
      while (next[size_t(s)] < ops[size_t(s)].size()) {
        const PipelineOp op = ops[size_t(s)][next[size_t(s)]];
        const bool ready = op.forward
                               ? (s == 0 || done.count({s - 1, true, op.micro}))
                               : (done.count({s, true, op.micro}) &&
                                  (s == pipeline - 1 || done.count({s + 1, false, op.micro})));
        if (!ready) break;
        done[{s, op.forward, op.micro}] = true;
        ++next[size_t(s)];
        progress = true;
      }
    }
  }
  for (int64_t s = 0; s < pipeline; ++s)
    if (next[size_t(s)] != ops[size_t(s)].size()) return false;
  return true;
}

}  // namespace

TEST_CASE("pipeline schedules: the published orders") {
  // One stage: forward and backward in turn (one micro-batch alive at a time).
  CHECK(Text(PipelineOps(PipelineSchedule::kOneFOneB, 1, 0, 3)) == "F0 B0 F1 B1 F2 B2 ");
  CHECK(Text(PipelineOps(PipelineSchedule::kGpipe, 1, 0, 2)) == "F0 B0 F1 B1 ");
  CHECK(Text(PipelineOps(PipelineSchedule::kGpipe, 2, 1, 3)) == "F0 F1 F2 B0 B1 B2 ");
  // 1F1B with 4 stages and 6 micro-batches: the first stage warms up with 3 forwards.
  CHECK(Text(PipelineOps(PipelineSchedule::kOneFOneB, 4, 0, 6)) ==
        "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  CHECK(Text(PipelineOps(PipelineSchedule::kOneFOneB, 4, 3, 6)) ==
        "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  // Fewer micro-batches than the warm-up: all forwards, then all backwards.
  CHECK(Text(PipelineOps(PipelineSchedule::kOneFOneB, 4, 0, 2)) == "F0 F1 B0 B1 ");
  CHECK(PipelineOps(PipelineSchedule::kDualPipe, 4, 1, 5) ==
        PipelineOps(PipelineSchedule::kOneFOneB, 4, 1, 5));
  CHECK(PipelineOps(PipelineSchedule::kOneFOneB, 2, 0, 0).empty());
}

TEST_CASE("pipeline schedules: each micro-batch once each way, memory bounded, no deadlock") {
  for (auto schedule :
       {PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB, PipelineSchedule::kDualPipe}) {
    for (int64_t pipeline : {1, 2, 3, 4, 8}) {
      for (int64_t micro : {1, 2, 3, 4, 7, 16}) {
        CAPTURE(int(schedule));
        CAPTURE(pipeline);
        CAPTURE(micro);
        for (int64_t s = 0; s < pipeline; ++s) {
          const auto ops = PipelineOps(schedule, pipeline, s, micro);
          REQUIRE(ops.size() == size_t(2 * micro));
          std::vector<int> state(size_t(micro), 0);  // 0 new, 1 forwarded, 2 done
          int64_t last_backward = -1;
          for (const auto& op : ops) {
            REQUIRE(op.micro >= 0);
            REQUIRE(op.micro < micro);
            CHECK(state[size_t(op.micro)] == (op.forward ? 0 : 1));
            state[size_t(op.micro)] += 1;
            if (!op.forward) {
              CHECK(op.micro == last_backward + 1);
              last_backward = op.micro;
            }
          }
          const int64_t in_flight = MicroBatchesInFlight(ops);
          if (pipeline == 1) {
            CHECK(in_flight == 1);
          } else if (schedule == PipelineSchedule::kGpipe) {
            CHECK(in_flight == micro);
          } else {  // 1F1B's point: at most pipeline − stage micro-batches alive
            CHECK(in_flight == std::min(micro, pipeline - s));
          }
        }
        CHECK(RunsToCompletion(schedule, pipeline, micro));
      }
    }
  }
}
