#include "common/route_address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moerun {

Result<std::string> LocalAddressToward(const std::string& endpoint) {
  const std::string scheme = "tcp://";
  const size_t colon = endpoint.rfind(':');
  if (endpoint.rfind(scheme, 0) != 0 || colon == std::string::npos || colon <= scheme.size())
    return Status::InvalidArgument("'" + endpoint + "' is not tcp://HOST:PORT");
  const std::string host = endpoint.substr(scheme.size(), colon - scheme.size());
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host.c_str(), "9", &hints, &res) != 0 || res == nullptr)
    return Status::Unavailable("cannot resolve " + host + " (from " + endpoint + ")");
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Status failed;
  sockaddr_in local{};
  socklen_t len = sizeof local;
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    failed = Status::Unavailable("no route to " + host + " (from " + endpoint +
                                 "): " + std::strerror(errno));
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  if (!failed.ok()) return failed;
  char ip[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &local.sin_addr, ip, sizeof ip);
  return std::string(ip);
}

}  // namespace moerun
