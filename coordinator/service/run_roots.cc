#include "coordinator/service/run_roots.h"

#include <filesystem>

namespace moerun::coordinator {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSystemDirs[] = {"/bin",   "/boot",  "/dev",    "/etc",  "/lib",
                                       "/lib32", "/lib64", "/libx32", "/proc", "/root",
                                       "/run",   "/sbin",  "/sys",    "/usr"};

std::string Normal(const std::string& path) {
  std::string n = fs::path(path).lexically_normal().string();
  while (n.size() > 1 && n.back() == '/') n.pop_back();
  return n;
}

// Whether `path` is `dir` or lies below it (whole components: /data2 is not below /data).
bool Within(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir ||
         (path.rfind(dir, 0) == 0 && path.size() > dir.size() && path[dir.size()] == '/');
}

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

Result<RunRoots> RunRoots::Create(const std::vector<std::string>& roots) {
  RunRoots r;
  for (const auto& root : roots) {
    if (root.empty() || root[0] != '/') {
      return Status::InvalidArgument("--allowed-run-roots: '" + root + "' is not an absolute path");
    }
    r.roots_.push_back(Normal(root));
  }
  return r;
}

Status RunRoots::Check(const std::string& field, const std::string& path) const {
  if (path.empty() || path[0] != '/') {
    return Status::InvalidArgument(field + " '" + path +
                                   "' must be an absolute path (it names a directory on every "
                                   "worker host)");
  }
  const std::string p = Normal(path);
  if (!roots_.empty()) {
    for (const auto& root : roots_)
      if (Within(p, root)) return Status::OK();
    return Status::InvalidArgument(field + " " + p +
                                   " is outside the directories this coordinator lets jobs write "
                                   "(--allowed-run-roots " +
                                   Joined(roots_) + "): choose one below them");
  }
  if (p == "/") {
    return Status::InvalidArgument(field +
                                   " / is the root directory: choose a directory for the "
                                   "run on a shared file system");
  }
  for (const char* dir : kSystemDirs) {
    if (Within(p, dir)) {
      return Status::InvalidArgument(
          field + " " + p + " is in " + dir +
          ", a system directory, where no job writes (a coordinator started without "
          "--allowed-run-roots refuses /, /bin, /boot, /dev, /etc, /lib*, /proc, /root, /run, "
          "/sbin, /sys and /usr): choose a directory for the run on a shared file system");
    }
  }
  return Status::OK();
}

}  // namespace moerun::coordinator
