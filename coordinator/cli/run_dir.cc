#include "coordinator/cli/run_dir.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/exit_codes.h"
#include "common/spec_loader.h"
#include "worker/trainer/trainer.h"

namespace moerun::cli {

Result<Run> OpenRun(const std::string& run_dir) {
  const std::string path = run_dir + "/job.yaml";
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + " not found: is " + run_dir + " a moerun run directory?");
  std::stringstream text;
  text << in.rdbuf();
  LoadedJobSpec loaded = LoadJobSpecText(text.str(), path);
  if (!loaded.ok())
    return Status::InvalidArgument("the run's job spec is invalid:\n" + loaded.Report());
  return Run{loaded.spec, trainer::CheckpointDir(loaded.spec, run_dir)};
}

Result<int64_t> ChooseStep(const checkpoint::RunCheckpoints& ckpts, std::optional<int64_t> step) {
  if (step) {
    auto entries = ckpts.ReadStep(*step);
    if (!entries.ok()) return entries.status();
    return *step;
  }
  std::vector<std::string> refused;
  auto newest = ckpts.NewestReadableStep(&refused);
  for (const auto& r : refused) std::fprintf(stderr, "refused checkpoint %s\n", r.c_str());
  return newest;
}

Result<RunStep> OpenRunStep(const std::string& run_dir, std::optional<int64_t> step) {
  auto run = OpenRun(run_dir);
  if (!run.ok()) return run.status();
  auto ckpts = checkpoint::RunCheckpoints::Open(run->checkpoint_dir);
  if (!ckpts.ok()) return ckpts.status();
  auto chosen = ChooseStep(ckpts.value(), step);
  if (!chosen.ok()) return chosen.status();
  auto entries = ckpts->ReadStep(chosen.value());
  if (!entries.ok()) return entries.status();
  return RunStep{std::move(run.value()), chosen.value(), std::move(entries.value())};
}

int Fail(const char* command, const Status& s) {
  std::fprintf(stderr, "moerun %s: %s\n", command, s.message().c_str());
  return s.code() == Status::Code::kInvalidArgument ? kExitInvalidConfig : kExitFailure;
}

}  // namespace moerun::cli
