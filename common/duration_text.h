// Durations for people: "42s", "3m05s", "2h10m" ("-" for a negative or infinite one). Used by
// the trainer's progress bar and the CLI's tables alike.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace moerun {

inline std::string DurationText(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "-";
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

}  // namespace moerun
