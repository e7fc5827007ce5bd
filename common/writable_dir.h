// Whether this process can write into a directory, tried by creating (and removing) a file
// there: permissions, a read-only mount and an immutable attribute (chattr +i) all show here,
// by path, rather than deep inside RocksDB (which may abort) or spdlog (which throws).
// DataLoss when it cannot: exit 3, never retried, since a restart cannot help.
#pragma once

#include <string>

#include "common/status.h"

namespace moerun {

// `what` names the directory for people: "run dir", "checkpoint shard".
Status CheckWritableDir(const std::string& dir, const std::string& what);

}  // namespace moerun
