// DashboardAssets: the files of the coordinator's dashboard, embedded at build time
// (coordinator/dashboard/CMakeLists.txt). Paths are the URL paths the HTTP API serves them at.
// The bodies live in the binary's read-only data for the life of the process.
#pragma once

#include <string_view>
#include <vector>

namespace moerun::coordinator {

struct DashboardAsset {
  std::string_view path;          // "/", "/dashboard.js", "/vendor/echarts.min.js", ...
  std::string_view content_type;  // with charset for text
  std::string_view body;
  bool versioned;  // third-party code pinned by the build: cacheable; ours: revalidate
};

const std::vector<DashboardAsset>& DashboardAssets();

// False when the build found neither npm nor MOERUN_ECHARTS_DIR: the page says so.
bool DashboardHasCharts();

}  // namespace moerun::coordinator
