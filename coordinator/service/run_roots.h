// RunRoots: where a submitted job may have its trainers write (docs/control-plane.md, "Jobs").
// A token holder can name any run dir and checkpoint dir, and trainers write there as the
// daemons' user on every worker host; a coordinator's admin bounds that with
// --allowed-run-roots. With roots, a run dir or checkpoint.dir must lie at or below one of them;
// without, it must not lie in a system directory (/, /bin, /boot, /dev, /etc, /lib*, /proc,
// /root, /run, /sbin, /sys, /usr). Paths are judged lexically after normalization ("a/../b" is
// "b"): the coordinator cannot see the worker hosts' symlinks. Thread-safe (immutable).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace moerun::coordinator {

class RunRoots {
 public:
  // Each root absolute; InvalidArgument naming the one that is not. Empty: the system-directory
  // rule.
  static Result<RunRoots> Create(const std::vector<std::string>& roots);

  // OK, or InvalidArgument that names `field`, the path and the rule it breaks.
  Status Check(const std::string& field, const std::string& path) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  std::vector<std::string> roots_;  // normalized, no trailing slash
};

}  // namespace moerun::coordinator
