// FlightRecorder: a trainer's last data-plane operations, kept where a hang cannot hide them
// (docs/fault-tolerance.md, "Hangs"). Every call through a TimedCommunicator (send, receive,
// all-reduce, all-to-all, ...) is one record: its number on this rank, its number within its
// group, the group, the peer, the bytes, and when it began and ended. The ring lives in a file
// the trainer maps (next to its beat file, in its daemon's state dir), so the daemon can read
// it while the trainer is stuck in a collective, frozen or gone, and the coordinator can name
// the rank that did not arrive and the collective everyone else waits in.
//
// File layout, version 1: a 64-byte header {magic "MOEFLT01", rank, capacity, written}, then
// `capacity` 64-byte records, record i of the run at slot i mod capacity. `written` is
// published after each record (release), so a reader sees whole records except, at worst, the
// one being written, which it recognises by its number. Times are CLOCK_MONOTONIC ns.
// One writer thread (the trainer's, as the communicator); readers in other processes.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"

namespace moerun::comm {

enum class FlightOp : uint8_t {
  kSend = 1,
  kRecv,
  kSendRecv,
  kAllReduce,
  kAllToAll,
  kBroadcast,
  kBarrier
};
const char* ToString(FlightOp op);

struct FlightEntry {
  uint64_t seq = 0;        // this rank's operation number, from 1
  uint64_t group_seq = 0;  // its number within its group, from 1
  int64_t start_ns = 0;
  int64_t end_ns = 0;  // 0: still running (or the process died in it)
  uint64_t bytes = 0;
  FlightOp op = FlightOp::kBarrier;
  bool ok = true;
  int16_t peer = -1;  // a point-to-point call's peer (group rank); -1 for collectives
  int16_t group_rank = 0, group_size = 0;
  std::string group;  // the communicator's name: "world", "dp", "ep", "pp", ...
  nlohmann::json ToJson(int64_t now_ns) const;
};

class FlightRecorder {
 public:
  static constexpr int64_t kDefaultCapacity = 256;

  // Creates (or truncates) `path` for `rank`; the error names the file.
  static Result<std::shared_ptr<FlightRecorder>> Create(const std::string& path, int rank,
                                                        int64_t capacity = kDefaultCapacity);
  // A recorder file's rank and newest entries, oldest first (at most `last`); an error names
  // the file and what is wrong with it.
  struct Contents {
    int rank = 0;
    uint64_t written = 0;
    std::vector<FlightEntry> entries;
  };
  static Result<Contents> Read(const std::string& path, size_t last = kDefaultCapacity);

  // Returns the entry's slot handle for End().
  uint64_t Begin(FlightOp op, const std::string& group, uint64_t group_seq, int group_rank,
                 int group_size, int peer, uint64_t bytes);
  void End(uint64_t seq, bool ok);

  static int64_t NowNs();

 private:
  FlightRecorder(MappedFile file, int64_t capacity) : file_(std::move(file)), capacity_(capacity) {}
  MappedFile file_;
  int64_t capacity_;
  uint64_t next_seq_ = 1;
};

}  // namespace moerun::comm
