// MappedFile: a file mapped shared into this process (open, size, mmap and their errors in one
// place), for what processes share through files: beat files (common/beat_file.h), flight
// recorders (worker/comm/flight_recorder.h) and memory snapshots
// (worker/checkpoint/memory_snapshots.h).
//
// Failures: the file cannot be opened (IOError, or NotFound for kReadOnly), sized (IOError that
// asks whether the file system is full) or mapped (IOError); an existing file shorter than the
// size asked for is Corruption. Each message starts with `what` and the path. Owns the mapping
// (unmapped on destruction); movable, not copyable; not thread-safe (the bytes mapped are the
// caller's to synchronize).
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace moerun {

class MappedFile {
 public:
  enum class Mode {
    kCreate,     // created or truncated, then sized to `size` (zeros)
    kResize,     // created if missing, sized to `size`, its bytes kept
    kReadWrite,  // must exist, at least `size` bytes (0: whatever it holds)
    kReadOnly,   // as kReadWrite, mapped read-only
  };
  // `what` names the file in errors: "beat file", "flight recorder".
  static Result<MappedFile> Map(const std::string& path, Mode mode, size_t size,
                                const std::string& what);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  bool mapped() const { return data_ != nullptr; }
  void Unmap();

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moerun
