#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace moerun {

Result<MappedFile> MappedFile::Map(const std::string& path, Mode mode, size_t size,
                                   const std::string& what) {
  const bool create = mode == Mode::kCreate || mode == Mode::kResize;
  const bool writable = mode != Mode::kReadOnly;
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  if (create) flags |= O_CREAT;
  if (mode == Mode::kCreate) flags |= O_TRUNC;
  const int fd = open(path.c_str(), flags, 0600);
  if (fd < 0) {
    const std::string why = what + " " + path + ": " + std::strerror(errno);
    return mode == Mode::kReadOnly && errno == ENOENT ? Status::NotFound(why)
                                                      : Status::IOError(why);
  }
  auto fail = [&](Status s) {
    close(fd);
    return s;
  };
  if (create && ftruncate(fd, off_t(size)) != 0) {
    return fail(Status::IOError(what + " " + path + " cannot be sized to " + std::to_string(size) +
                                " bytes (is its file system full?): " + std::strerror(errno)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0)
    return fail(Status::IOError(what + " " + path + ": " + std::strerror(errno)));
  if (size_t(st.st_size) < size) {
    return fail(Status::Corruption(what + " " + path + " is shorter than " + std::to_string(size) +
                                   " bytes"));
  }
  const size_t bytes = create || size > 0 ? size : size_t(st.st_size);
  if (bytes == 0) return fail(Status::Corruption(what + " " + path + " is empty"));
  void* map =
      mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);  // the mapping keeps the file
  if (map == MAP_FAILED)
    return Status::IOError(what + " " + path + " cannot be mapped: " + std::strerror(err));
  return MappedFile(map, bytes);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { Unmap(); }

void MappedFile::Unmap() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace moerun
