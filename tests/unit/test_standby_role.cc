// StandbyRole's wire format: a role survives the trip whole (arguments with spaces, newlines,
// colons, empty ones), and what cannot be read is refused with a message that says why.
// RetitleProcess on a fake argument area: the title fits, is cut at the room, and is padded.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/limits.h"
#include "common/standby_role.h"

using moerun::DecodeStandbyRole;
using moerun::EncodeStandbyRole;
using moerun::StandbyRole;

TEST_CASE("a standby role survives encoding, and a socket, whole") {
  const StandbyRole role{"/var/log/rank 3.log",
                         {"/usr/bin/moerun", "train", "a b\nc:d", "", "--rank", "3"}};
  const std::string wire = EncodeStandbyRole(role);
  CHECK(wire.rfind("moerun-standby-role 1 7\n", 0) == 0);
  auto back = DecodeStandbyRole(wire);
  REQUIRE(back.ok());
  CHECK(back->log_path == role.log_path);
  CHECK(back->argv == role.argv);

  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  std::thread writer([&] {
    CHECK(write(fds[1], wire.data(), wire.size()) == ssize_t(wire.size()));
    close(fds[1]);
  });
  auto read = moerun::ReadStandbyRole(fds[0]);
  writer.join();
  close(fds[0]);
  REQUIRE(read.ok());
  CHECK(read->argv == role.argv);
}

TEST_CASE("a standby role that cannot be read is refused with the reason") {
  auto refused = [](const std::string& wire, const std::string& why) {
    auto r = DecodeStandbyRole(wire);
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(r.status().message().find(why) != std::string::npos, r.status().message());
  };
  refused("", "no header line");
  refused("something else 1 2\n4:/log6:moerun", "does not start with");
  refused("moerun-standby-role 2 2\n4:/log6:moerun", "version 2, this one reads 1");
  refused("moerun-standby-role 1 1\n4:/log", "needs a log path and a program");
  refused("moerun-standby-role 1 2\n4:/log9:moerun", "field 1 is cut short");
  refused("moerun-standby-role 1 2\n4:/logx:moerun", "field 1 is cut short or has no length");
  refused("moerun-standby-role 1 2\n4:/log6:moerunXY", "2 bytes after the last field");
  refused("moerun-standby-role 1 2\n4:/log0:", "an empty program");

  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  close(fds[1]);  // closed before a byte: the daemon does not want this standby
  auto none = moerun::ReadStandbyRole(fds[0]);
  close(fds[0]);
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().code() == moerun::Status::Code::kNotFound);
}

TEST_CASE("a retitled command line shows the role, cut at the room the original holds") {
  char area[] = "moerun\0standby\0          ";  // as main gets it: strings back to back
  char* argv[] = {area, area + 7, area + 15};
  const size_t room = sizeof area;  // the final NUL of the literal included
  moerun::RetitleProcess(3, argv, {"moerun", "train", "x"});
  CHECK(std::memcmp(area, "moerun\0train\0x\0", 15) == 0);
  for (size_t i = 15; i < room; ++i) CHECK(area[i] == '\0');

  char small[] = "ab\0cd";
  char* small_argv[] = {small, small + 3};
  moerun::RetitleProcess(2, small_argv, {"moerun", "train"});
  CHECK(std::string(small) == "moeru");  // cut, and still NUL-terminated
}
