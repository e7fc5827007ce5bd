#include "coordinator/dashboard/dashboard_assets.h"

// Each file becomes bytes between two symbols in .rodata; the paths come from CMake.
#define MOERUN_EMBED(name, file)                                        \
  __asm__(".section .rodata\n.balign 16\n.global moerun_asset_" #name   \
          "_begin\nmoerun_asset_" #name "_begin:\n.incbin \"" file      \
          "\"\n.global moerun_asset_" #name "_end\nmoerun_asset_" #name \
          "_end:\n"                                                     \
          ".byte 0\n.previous\n");                                      \
  extern "C" const char moerun_asset_##name##_begin[], moerun_asset_##name##_end[];

MOERUN_EMBED(page, MOERUN_ASSET_PAGE)
MOERUN_EMBED(script, MOERUN_ASSET_SCRIPT)
MOERUN_EMBED(style, MOERUN_ASSET_STYLE)
MOERUN_EMBED(echarts, MOERUN_ASSET_ECHARTS)
MOERUN_EMBED(licences, MOERUN_ASSET_LICENCES)

#define MOERUN_ASSET_BODY(name)                 \
  std::string_view(moerun_asset_##name##_begin, \
                   size_t(moerun_asset_##name##_end - moerun_asset_##name##_begin))

namespace moerun::coordinator {

const std::vector<DashboardAsset>& DashboardAssets() {
  static const std::vector<DashboardAsset> assets = {
      {"/", "text/html; charset=utf-8", MOERUN_ASSET_BODY(page), false},
      {"/dashboard.js", "text/javascript; charset=utf-8", MOERUN_ASSET_BODY(script), false},
      {"/dashboard.css", "text/css; charset=utf-8", MOERUN_ASSET_BODY(style), false},
      {"/vendor/echarts.min.js", "text/javascript; charset=utf-8", MOERUN_ASSET_BODY(echarts),
       true},
      {"/vendor/LICENSES.txt", "text/plain; charset=utf-8", MOERUN_ASSET_BODY(licences), true},
  };
  return assets;
}

bool DashboardHasCharts() { return MOERUN_DASHBOARD_CHARTS; }

}  // namespace moerun::coordinator
