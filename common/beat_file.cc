#include "common/beat_file.h"

#include <cstring>

#include "common/clock.h"

namespace moerun {
namespace {

constexpr size_t kBytes = 64;
constexpr char kMagic[9] = "MOEBEAT1";

static_assert(std::atomic<int64_t>::is_always_lock_free, "beats are shared between processes");

}  // namespace

int64_t BeatFile::NowMs() { return SystemClock::Default()->NowMs(); }

Result<std::unique_ptr<BeatFile>> BeatFile::Create(const std::string& path, int64_t now_ms,
                                                   int64_t daemon_pid) {
  auto map = MappedFile::Map(path, MappedFile::Mode::kCreate, kBytes, "beat file");
  if (!map.ok()) return map.status();
  void* bytes = map->data();
  std::unique_ptr<BeatFile> f(new BeatFile(path, std::move(map.value())));
  std::memset(bytes, 0, kBytes);
  f->slot(3).store(daemon_pid);
  f->BeatDaemon(now_ms);
  std::memcpy(bytes, kMagic, 8);  // last: a reader that sees the magic sees the rest
  return f;
}

Result<std::unique_ptr<BeatFile>> BeatFile::Open(const std::string& path) {
  auto map = MappedFile::Map(path, MappedFile::Mode::kReadWrite, kBytes, "beat file");
  if (!map.ok()) return map.status();
  const void* bytes = map->data();
  std::unique_ptr<BeatFile> f(new BeatFile(path, std::move(map.value())));
  if (std::memcmp(bytes, kMagic, 8) != 0) {
    return Status::Corruption("beat file " + path + " is not a version 1 beat file");
  }
  return f;
}

}  // namespace moerun
