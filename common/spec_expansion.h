// SpecExpansion: what a job spec's YAML amounts to once its aliases are expanded, measured
// from the parser's events before anything is built from it (docs/job-spec.md, "Limits").
// An alias costs what its anchor's node costs, nested aliases included, so a 119 KB file that
// names one long string 5,000 times counts as the 500 MB it would become. Refused past
// kMaxJobSpecBytes of scalars or kMaxJobSpecNodes nodes, naming the alias that crossed the
// line; linear in the file's size, so a refusal takes milliseconds. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moerun {

struct SpecExpansionCheck {
  bool ok = true;
  uint64_t nodes = 0, bytes = 0;  // as far as the check went
  // When refused: the 1-based position of the event that crossed a limit, and why.
  int line = 0, column = 0;
  std::string message;
};

// The text must be one YAML document (the loader's precheck says so); a syntax error is
// reported as ok (the YAML loader reports it better).
SpecExpansionCheck CheckSpecExpansion(std::string_view text);

}  // namespace moerun
