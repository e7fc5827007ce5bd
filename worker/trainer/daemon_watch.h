// DaemonWatch: a trainer's side of its BeatFile (common/beat_file.h). A thread beats every
// kTrainerBeatMs and reads the daemon's beat; once that is older than the lease the daemon
// gave (its coordinator's heartbeat timeout less one heartbeat interval), the daemon is frozen
// or deadlocked, the coordinator is about to count it dead and restart this rank elsewhere,
// and nothing else would stop this process: it says so on stderr (its log) and exits with
// kExitFailure at once, from whatever the main thread was doing. A daemon that dies takes
// its trainers with it (SIGKILL on parent death); this covers the one that stops.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/beat_file.h"
#include "common/status.h"

namespace moerun::trainer {

class DaemonWatch {
 public:
  // Opens `path` and starts the thread; the error names the file.
  static Result<std::unique_ptr<DaemonWatch>> Start(const std::string& path, int64_t lease_ms);
  ~DaemonWatch();  // stops the thread

 private:
  DaemonWatch(std::unique_ptr<BeatFile> file, int64_t lease_ms);
  void Run();

  std::unique_ptr<BeatFile> file_;
  int64_t lease_ms_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace moerun::trainer
