// moerun validate FILE... [--json]: checks job specs and reports every problem at once.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "coordinator/cli/commands.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::cli {
namespace {

struct ValidateOptions {
  std::vector<std::string> files;
  bool json = false;
};

nlohmann::json DiagnosticJson(const SpecDiagnostic& d) {
  return {{"severity", d.severity == SpecDiagnostic::Severity::kError ? "error" : "warning"},
          {"file", d.file},
          {"line", d.pos.line},
          {"column", d.pos.column},
          {"field", d.field},
          {"message", d.message}};
}

int RunValidate(const ValidateOptions& opts) {
  bool all_ok = true;
  nlohmann::json report = nlohmann::json::array();
  for (const std::string& file : opts.files) {
    LoadedJobSpec loaded = LoadJobSpecFile(file);
    all_ok = all_ok && loaded.ok();
    // A valid spec this version's GPU trainer cannot run yet: said, not an error.
    const Status gpu = loaded.ok() ? trainer::TrainerSupport(loaded.spec) : Status::OK();
    if (opts.json) {
      nlohmann::json diags = nlohmann::json::array();
      for (const auto& d : loaded.diagnostics) diags.push_back(DiagnosticJson(d));
      report.push_back(
          {{"file", file},
           {"ok", loaded.ok()},
           {"errors", loaded.error_count},
           {"diagnostics", diags},
           {"diagnostics_not_shown", loaded.dropped_diagnostics},
           {"not_trainable_yet", gpu.ok() ? nlohmann::json() : nlohmann::json(gpu.message())}});
      continue;
    }
    std::fputs(loaded.Report().c_str(), stderr);
    if (!gpu.ok()) {
      std::fprintf(stderr, "%s: note: valid, but not trainable by this version yet: %s\n",
                   file.c_str(), gpu.message().c_str());
    }
    if (loaded.ok()) {
      std::printf("%s: ok (job %s, world size %lld)\n", file.c_str(), loaded.spec.name.c_str(),
                  static_cast<long long>(loaded.spec.parallel.world_size()));
    } else {
      std::printf("%s: %zu error%s\n", file.c_str(), loaded.error_count,
                  loaded.error_count == 1 ? "" : "s");
    }
  }
  if (opts.json) std::cout << report.dump(2) << "\n";
  return all_ok ? kExitOk : kExitInvalidConfig;
}

}  // namespace

void AddValidateCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<ValidateOptions>();
  CLI::App* cmd = app.add_subcommand("validate", "Check job specs; exit 2 if any is invalid");
  cmd->add_option("files", opts->files, "job spec YAML files")->required();
  cmd->add_flag("--json", opts->json, "print a JSON report on stdout instead of text");
  cmd->callback([opts, exit_code] { *exit_code = RunValidate(*opts); });
}

}  // namespace moerun::cli
