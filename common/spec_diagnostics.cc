#include "common/spec_diagnostics.h"

#include "common/limits.h"

namespace moerun {

std::string SpecDiagnostic::ToString() const {
  std::string out = file;
  if (pos.in_file()) {
    out += ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
  }
  out += severity == Severity::kError ? ": error: " : ": warning: ";
  if (!field.empty()) out += field + ": ";
  out += message;
  return out;
}

SourcePos SourceMap::Locate(const std::string& path) const {
  std::string p = path;
  while (true) {
    auto it = positions_.find(p);
    if (it != positions_.end()) return it->second;
    auto dot = p.find_last_of('.');
    if (dot == std::string::npos) return {};
    p.resize(dot);
  }
}

void DiagnosticSink::Error(SourcePos pos, std::string field, std::string message) {
  Add(SpecDiagnostic::Severity::kError, pos, std::move(field), std::move(message));
}

void DiagnosticSink::Warning(SourcePos pos, std::string field, std::string message) {
  Add(SpecDiagnostic::Severity::kWarning, pos, std::move(field), std::move(message));
}

void DiagnosticSink::Add(SpecDiagnostic::Severity sev, SourcePos pos, std::string field,
                         std::string message) {
  if (sev == SpecDiagnostic::Severity::kError) {
    ++errors_;
    error_fields_.insert(field);
  }
  if (diagnostics_.size() >= kMaxSpecDiagnostics) {
    ++dropped_;
    return;
  }
  diagnostics_.push_back({sev, file_, pos, std::move(field), std::move(message)});
}

}  // namespace moerun

namespace moerun {

bool DiagnosticSink::HasErrorUnder(const std::string& field) const {
  for (std::string up = field;;) {  // the field itself, its sections, then the file ("")
    if (error_fields_.count(up) > 0) return true;
    if (up.empty()) break;
    auto cut = up.find_last_of(".[");
    up.resize(cut == std::string::npos ? 0 : cut);
  }
  for (auto it = error_fields_.lower_bound(field); it != error_fields_.end(); ++it) {
    if (it->compare(0, field.size(), field) != 0) break;
    if (it->size() == field.size() || (*it)[field.size()] == '.' || (*it)[field.size()] == '[') {
      return true;
    }
  }
  return false;
}

}  // namespace moerun
