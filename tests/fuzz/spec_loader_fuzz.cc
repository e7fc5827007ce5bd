// Fuzz target for the job-spec loader: any bytes must give diagnostics, never a crash, a
// hang or a sanitizer report. Built with libFuzzer under clang (MOERUN_FUZZ=ON); the same
// function is replayed over the seed corpus by tests/fuzz/replay_main.cc in every build.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/spec_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  moerun::LoadedJobSpec loaded = moerun::LoadJobSpecText(text, "fuzz.yaml");
  // Invariants: ok() means no error was reported, and every diagnostic renders.
  std::size_t errors = 0;
  for (const auto& d : loaded.diagnostics) {
    errors += d.severity == moerun::SpecDiagnostic::Severity::kError;
    if (d.ToString().empty()) std::abort();
  }
  if (loaded.ok() != (loaded.error_count == 0) || errors > loaded.error_count) std::abort();
  return 0;
}
