// moerun export --run-dir DIR [--step S] --out OUT
#include <cstdio>
#include <optional>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/run_dir.h"
#include "worker/trainer/hf_export.h"

namespace moerun::cli {
namespace {

struct ExportArgs {
  std::string run_dir, out;
  std::optional<int64_t> step;
};

int RunExport(const ExportArgs& a) {
  auto rs = OpenRunStep(a.run_dir, a.step);
  if (!rs.ok()) return Fail("export", rs.status());
  Status s = trainer::ExportHuggingFace(rs->run.spec, rs->entries, rs->step, a.out);
  if (!s.ok()) return Fail("export", s);
  std::printf("exported step %lld to %s/model.safetensors and %s/config.json\n",
              (long long)rs->step, a.out.c_str(), a.out.c_str());
  return kExitOk;
}

}  // namespace

void AddExportCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd =
      app.add_subcommand("export", "Write a checkpoint as safetensors + config.json (HF layout)");
  cmd->add_option("--run-dir", a->run_dir, "the run directory")->required();
  cmd->add_option("--step", a->step, "a complete step (default: the newest readable)");
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->callback([a, exit_code] { *exit_code = RunExport(*a); });
}

}  // namespace moerun::cli
