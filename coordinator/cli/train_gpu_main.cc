// moerun-train-gpu: `moerun train` with the GPU step linked in (worker/trainer/
// gpu_stage.h). `moerun train` hands a resources.backend: cuda job to this program
// (exec, same arguments), so that only training on GPUs loads CUDA's libraries.
#include <malloc.h>

#include <CLI/CLI.hpp>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"
#include "worker/trainer/gpu_stage.h"

int main(int argc, char** argv) {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // as moerun: reuse large host buffers
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  moerun::trainer::RegisterGpuStep();
  moerun::cli::RememberArgs(argc, argv);
  CLI::App app{"moerun-train-gpu: moerun train for jobs with resources.backend: cuda"};
  app.require_subcommand(1);
  int exit_code = moerun::kExitOk;
  moerun::cli::AddTrainCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? moerun::kExitOk : moerun::kExitInvalidConfig;
  }
  return exit_code;
}
