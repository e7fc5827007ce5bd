// Job specs for tests that need a small parallel job: tests/configs/train-fast.yaml reshaped.
#pragma once

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace moerun::testing {

// train-fast as a world-2 job (2 stages x 1 replica, expert 1) named `name`.
inline std::string WorldTwoSpecText(const std::string& name) {
  std::ifstream in(std::string(MOERUN_SOURCE_DIR) + "/tests/configs/train-fast.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
  };
  replace("name: train-fast", "name: " + name);
  replace("  data: 2\n", "  data: 1\n");
  replace("  expert: 2\n", "  expert: 1\n");
  replace("devices_per_worker: 2", "devices_per_worker: 1");
  return text;
}

}  // namespace moerun::testing
