#include "worker/trainer/daemon_watch.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "common/exit_codes.h"
#include "common/timeouts.h"

namespace moerun::trainer {

Result<std::unique_ptr<DaemonWatch>> DaemonWatch::Start(const std::string& path, int64_t lease_ms) {
  if (lease_ms <= 0) return Status::InvalidArgument("--daemon-lease-ms must be positive");
  auto file = BeatFile::Open(path);
  if (!file.ok()) return file.status();
  return std::unique_ptr<DaemonWatch>(new DaemonWatch(std::move(file.value()), lease_ms));
}

DaemonWatch::DaemonWatch(std::unique_ptr<BeatFile> file, int64_t lease_ms)
    : file_(std::move(file)), lease_ms_(lease_ms), thread_([this] { Run(); }) {}

DaemonWatch::~DaemonWatch() {
  stop_.store(true);
  thread_.join();
}

void DaemonWatch::Run() {
  while (!stop_.load()) {
    const int64_t now = BeatFile::NowMs();
    file_->BeatTrainer(now);
    const int64_t silent = now - file_->daemon_ms();
    if (silent > lease_ms_) {
      std::fprintf(stderr,
                   "moerun train: fenced: its daemon (pid %lld) has not beaten for %lld ms "
                   "(lease %lld ms): frozen or deadlocked, so this rank stops before the "
                   "coordinator restarts it elsewhere\n",
                   (long long)file_->daemon_pid(), (long long)silent, (long long)lease_ms_);
      std::fflush(stderr);
      _exit(kExitFailure);  // now, whatever the main thread is blocked in
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kTrainerBeatMs));
  }
}

}  // namespace moerun::trainer
