// Loading a job spec: YAML text -> validated JobSpec.
//
// Loading never throws and never crashes on any input (a fuzz target holds it to that):
// oversized files, binary junk, tabs, deep nesting and malformed YAML become diagnostics.
// Every problem of a file is reported at once: types, ranges, unknown keys (with a
// did-you-mean), duplicate keys, then the cross-field rules of spec_rules.h. Thread-safe:
// no shared state.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/job_spec.h"
#include "common/spec_diagnostics.h"
#include "common/status.h"

namespace moerun {

struct LoadedJobSpec {
  JobSpec spec;                             // meaningful only when ok()
  SourceMap sources;                        // where each field was written
  std::vector<SpecDiagnostic> diagnostics;  // errors and warnings, in file order of discovery
  std::size_t error_count = 0;
  std::size_t dropped_diagnostics = 0;  // beyond kMaxSpecDiagnostics

  bool ok() const { return error_count == 0; }
  // Every diagnostic on its own line, plus a count line when some were dropped.
  std::string Report() const;
};

// Reads and validates a file. Relative data.paths are resolved against the file's directory,
// and paths that do not exist on this machine produce warnings (they may exist on the hosts
// that run the trainers).
LoadedJobSpec LoadJobSpecFile(const std::string& path);
// The same, with relative data.paths resolved against `base_dir` instead: a spec that was
// submitted from another directory (the trainer of a submitted job gets the submitter's).
LoadedJobSpec LoadJobSpecFile(const std::string& path, const std::string& base_dir);

// Validates text; `display_name` stands for the file in diagnostics. Paths are kept as written.
LoadedJobSpec LoadJobSpecText(std::string_view text, const std::string& display_name);

// LoadJobSpecFile, with every error folded into one InvalidArgument status.
Result<JobSpec> LoadValidJobSpec(const std::string& path);

}  // namespace moerun
