// ClientGate: admission of HTTP connections (docs/control-plane.md, "HTTP API"). Each open
// connection holds a thread in the coordinator's HTTP server, so a client that opens many and
// sends nothing (or a byte a second) could starve everyone else. The gate admits at most
// `per_client` connections from one address and `total` in all; a connection over either is
// refused at once. Admit() and Release() pair up; thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>

namespace moerun::coordinator {

class ClientGate {
 public:
  ClientGate(int per_client, int total) : per_client_(per_client), total_(total) {}

  enum class Verdict { kAdmitted, kClientFull, kServerFull };
  // kAdmitted takes a place, which Release(address) gives back.
  Verdict Admit(const std::string& address);
  void Release(const std::string& address);

  int open() const;
  int open_from(const std::string& address) const;

 private:
  const int per_client_, total_;
  mutable std::mutex mu_;
  std::map<std::string, int> open_;  // address -> connections open
  int total_open_ = 0;
};

}  // namespace moerun::coordinator
