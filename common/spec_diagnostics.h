// Diagnostics for job specs: each one names the file, line, column, the field path
// (`parallel.expert`) and the rule it broke, in the form compilers use so editors can jump
// to it:  configs/job.yaml:12:3: error: parallel.expert: must divide parallel.data (2), got 4
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace moerun {

// 1-based position in the spec file; line 0 means "not in the file" (a default value).
struct SourcePos {
  int line = 0;
  int column = 0;
  bool in_file() const { return line > 0; }
};

struct SpecDiagnostic {
  enum class Severity { kError, kWarning };
  Severity severity = Severity::kError;
  std::string file;
  SourcePos pos;
  std::string field;  // dotted path, e.g. "model.moe.top_k"; empty for file-level problems
  std::string message;

  // "file:line:col: error: field: message" (line:col omitted when not in the file).
  std::string ToString() const;
};

// Where each field of a loaded spec was written: path -> position of its key.
class SourceMap {
 public:
  void Set(const std::string& path, SourcePos pos) { positions_[path] = pos; }
  bool Has(const std::string& path) const { return positions_.count(path) > 0; }
  // The field's own position, else that of its nearest written ancestor section, else none.
  SourcePos Locate(const std::string& path) const;

 private:
  std::map<std::string, SourcePos> positions_;
};

// Collects diagnostics for one file, capping the count at kMaxSpecDiagnostics.
class DiagnosticSink {
 public:
  explicit DiagnosticSink(std::string file) : file_(std::move(file)) {}
  void Error(SourcePos pos, std::string field, std::string message);
  void Warning(SourcePos pos, std::string field, std::string message);
  const std::string& file() const { return file_; }
  std::vector<SpecDiagnostic>& diagnostics() { return diagnostics_; }
  std::size_t error_count() const { return errors_; }
  std::size_t dropped() const { return dropped_; }
  // True when an error was reported for `field`, anything below it ("model" covers
  // "model.moe.top_k" and "model.x[2]") or any section above it, or for the file as a
  // whole. Counts dropped diagnostics too.
  bool HasErrorUnder(const std::string& field) const;

 private:
  void Add(SpecDiagnostic::Severity sev, SourcePos pos, std::string field, std::string message);
  std::string file_;
  std::vector<SpecDiagnostic> diagnostics_;
  std::size_t errors_ = 0;
  std::size_t dropped_ = 0;
  std::set<std::string> error_fields_;
};

}  // namespace moerun
