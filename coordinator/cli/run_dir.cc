#include "coordinator/cli/run_dir.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/exit_codes.h"
#include "common/model_tensors.h"
#include "common/spec_loader.h"
#include "worker/trainer/trainer.h"

namespace moerun::cli {

namespace fs = std::filesystem;

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

Status CheckRunDirModel(const LoadedJobSpec& job, const std::string& job_file,
                        const std::string& run_dir) {
  std::error_code ec;
  if (!fs::exists(run_dir + "/job.yaml", ec)) return Status::OK();
  auto run = OpenRun(run_dir);
  if (!run.ok()) return Status::OK();  // not a run this version wrote: the trainer decides
  const std::string ckpt = trainer::CheckpointDir(job.spec, run_dir);
  if (!fs::exists(ckpt, ec) || fs::is_empty(ckpt, ec)) return Status::OK();
  const auto theirs = ModelShapeFields(run->spec.model);
  for (const ModelShapeField& f : ModelShapeFields(job.spec.model)) {
    auto it = std::find_if(theirs.begin(), theirs.end(),
                           [&](const ModelShapeField& t) { return t.field == f.field; });
    const int64_t was = it == theirs.end() ? 0 : it->value;
    if (was == f.value) continue;
    SpecDiagnostic d;
    d.file = job_file;
    d.pos = job.sources.Locate(f.field);
    d.field = f.field;
    d.message = ModelShapeText(f.field, f.value) + ", but the checkpoints in " + ckpt +
                " are of a model with " + f.field + ": " + ModelShapeText(f.field, was) + " (" +
                run_dir +
                "/job.yaml); train into a new --run-dir, or resume with the "
                "model the run was trained with";
    return Status::InvalidArgument(d.ToString());
  }
  return Status::OK();
}

int Fail(const char* command, const Status& s) {
  std::fprintf(stderr, "moerun %s: %s\n", command, s.message().c_str());
  return s.code() == Status::Code::kInvalidArgument ? kExitInvalidConfig : kExitFailure;
}

}  // namespace moerun::cli
