// LocalAddressToward: the address of this host's interface that packets to a ZeroMQ tcp://
// endpoint leave from, which is the address that host (and, on one network, its peers) reach
// this one at. `moerun-worker --data-host auto` binds its trainers' data plane there, so a
// daemon started by srun on any node needs no per-node flag. Asks the kernel's routing table
// (a UDP socket connected, nothing sent); thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace moerun {

// "tcp://10.0.0.1:7100" -> "10.0.0.2" (IPv4). InvalidArgument for an endpoint that is not
// tcp://HOST:PORT, Unavailable when HOST does not resolve or no route leads there.
Result<std::string> LocalAddressToward(const std::string& endpoint);

}  // namespace moerun
