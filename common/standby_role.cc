#include "common/standby_role.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/limits.h"

namespace moerun {
namespace {

constexpr const char* kMagic = "moerun-standby-role";

std::atomic<int64_t> activated_boot_ns{0};

// The decimal at `at` up to `end` (exclusive), or -1.
int64_t ParseCount(const std::string& s, size_t at, size_t end) {
  if (at >= end || end - at > 9) return -1;
  int64_t v = 0;
  for (size_t i = at; i < end; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

std::string EncodeStandbyRole(const StandbyRole& role) {
  std::string out = std::string(kMagic) + " " + std::to_string(kStandbyRoleVersion) + " " +
                    std::to_string(role.argv.size() + 1) + "\n";
  auto field = [&out](const std::string& f) { out += std::to_string(f.size()) + ":" + f; };
  field(role.log_path);
  for (const auto& a : role.argv) field(a);
  return out;
}

Result<StandbyRole> DecodeStandbyRole(const std::string& s) {
  auto bad = [](const std::string& why) {
    return Status::InvalidArgument("standby role: " + why +
                                   " (a worker daemon and its moerun binary of another version?)");
  };
  const size_t line_end = s.find('\n');
  if (line_end == std::string::npos) return bad("no header line");
  const std::string header = s.substr(0, line_end);
  const std::string magic = std::string(kMagic) + " ";
  if (header.rfind(magic, 0) != 0) return bad("it does not start with '" + magic + "'");
  const size_t space = header.find(' ', magic.size());
  if (space == std::string::npos) return bad("header '" + header + "' has no field count");
  const int64_t version = ParseCount(header, magic.size(), space);
  if (version != kStandbyRoleVersion) {
    return bad("version " + header.substr(magic.size(), space - magic.size()) +
               ", this one reads " + std::to_string(kStandbyRoleVersion));
  }
  const int64_t count = ParseCount(header, space + 1, header.size());
  if (count < 2) return bad("header '" + header + "' needs a log path and a program");
  std::vector<std::string> fields;
  size_t at = line_end + 1;
  for (int64_t i = 0; i < count; ++i) {
    const size_t colon = s.find(':', at);
    const int64_t n = colon == std::string::npos ? -1 : ParseCount(s, at, colon);
    if (n < 0 || s.size() - (colon + 1) < size_t(n))
      return bad("field " + std::to_string(i) + " is cut short or has no length");
    fields.push_back(s.substr(colon + 1, size_t(n)));
    at = colon + 1 + size_t(n);
  }
  if (at != s.size()) return bad(std::to_string(s.size() - at) + " bytes after the last field");
  StandbyRole role;
  role.log_path = std::move(fields[0]);
  role.argv.assign(fields.begin() + 1, fields.end());
  if (role.argv[0].empty()) return bad("an empty program");
  return role;
}

Result<StandbyRole> ReadStandbyRole(int fd) {
  std::string bytes;
  char buf[4096];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError(std::string("standby role: read: ") + std::strerror(errno));
    if (n == 0) break;
    bytes.append(buf, size_t(n));
    if (bytes.size() > kMaxStandbyRoleBytes) {
      return Status::InvalidArgument("standby role: over " + std::to_string(kMaxStandbyRoleBytes) +
                                     " bytes");
    }
  }
  if (bytes.empty()) return Status::NotFound("standby role: closed before a role came");
  return DecodeStandbyRole(bytes);
}

void RetitleProcess(int argc, char** argv, const std::vector<std::string>& title) {
  if (argc <= 0) return;
  // The original strings lie back to back; the room runs to the end of the last one that does.
  char* begin = argv[0];
  char* end = argv[0] + std::strlen(argv[0]) + 1;
  for (int i = 1; i < argc && argv[i] == end; ++i) end = argv[i] + std::strlen(argv[i]) + 1;
  const size_t room = size_t(end - begin);
  std::string joined;
  for (const auto& t : title) joined.append(t.c_str(), t.size() + 1);
  const size_t n = std::min(joined.size(), room);
  std::memcpy(begin, joined.data(), n);
  std::memset(begin + n, 0, room - n);
  begin[room - 1] = '\0';  // a NUL last: the kernel shows exactly this area
}

void MarkStandbyActivated() {
  timespec now{};
  clock_gettime(CLOCK_BOOTTIME, &now);
  activated_boot_ns.store(int64_t(now.tv_sec) * 1000000000 + now.tv_nsec);
}

int64_t StandbyActivatedBootNs() { return activated_boot_ns.load(); }

}  // namespace moerun
