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
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "moerun export: %s\n", s.message().c_str());
    return ExitCodeFor(s);
  };
  auto run = OpenRun(a.run_dir);
  if (!run.ok()) return fail(run.status());
  auto ckpts = checkpoint::RunCheckpoints::Open(run->checkpoint_dir);
  if (!ckpts.ok()) return fail(ckpts.status());
  auto step = ChooseStep(ckpts.value(), a.step);
  if (!step.ok()) return fail(step.status());
  auto entries = ckpts->ReadStep(step.value());
  if (!entries.ok()) return fail(entries.status());
  Status s = trainer::ExportHuggingFace(run->spec, entries.value(), step.value(), a.out);
  if (!s.ok()) return fail(s);
  std::printf("exported step %lld to %s/model.safetensors and %s/config.json\n",
              (long long)step.value(), a.out.c_str(), a.out.c_str());
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
