#include "common/beat_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace moerun {
namespace {

constexpr size_t kBytes = 64;
constexpr char kMagic[9] = "MOEBEAT1";

static_assert(std::atomic<int64_t>::is_always_lock_free, "beats are shared between processes");

Result<void*> Map(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("beat file " + path + ": " + std::strerror(errno));
  if ((flags & O_CREAT) && ftruncate(fd, kBytes) != 0) {
    const int err = errno;
    close(fd);
    return Status::IOError("beat file " + path + ": " + std::strerror(err));
  }
  if (lseek(fd, 0, SEEK_END) < off_t(kBytes)) {
    close(fd);
    return Status::Corruption("beat file " + path + " is shorter than " + std::to_string(kBytes) +
                              " bytes");
  }
  void* map = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);  // the mapping keeps the file
  if (map == MAP_FAILED) return Status::IOError("beat file " + path + ": " + std::strerror(err));
  return map;
}

}  // namespace

int64_t BeatFile::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Result<std::unique_ptr<BeatFile>> BeatFile::Create(const std::string& path, int64_t now_ms,
                                                   int64_t daemon_pid) {
  auto map = Map(path, O_RDWR | O_CREAT | O_TRUNC);
  if (!map.ok()) return map.status();
  std::unique_ptr<BeatFile> f(new BeatFile(path, map.value()));
  std::memset(map.value(), 0, kBytes);
  f->slot(3).store(daemon_pid);
  f->BeatDaemon(now_ms);
  std::memcpy(map.value(), kMagic, 8);  // last: a reader that sees the magic sees the rest
  return f;
}

Result<std::unique_ptr<BeatFile>> BeatFile::Open(const std::string& path) {
  auto map = Map(path, O_RDWR);
  if (!map.ok()) return map.status();
  std::unique_ptr<BeatFile> f(new BeatFile(path, map.value()));
  if (std::memcmp(map.value(), kMagic, 8) != 0) {
    return Status::Corruption("beat file " + path + " is not a version 1 beat file");
  }
  return f;
}

BeatFile::~BeatFile() { munmap(map_, kBytes); }

}  // namespace moerun
