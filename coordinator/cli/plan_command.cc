// moerun plan FILE [--json] [--ranks] [--gpu-peak-tflops P --mfu M --tokens T]
#include <cstdio>
#include <iostream>

#include "common/exit_codes.h"
#include "common/job_plan.h"
#include "common/plan_report.h"
#include "common/spec_loader.h"
#include "coordinator/cli/commands.h"
#include "worker/trainer/trainer_support.h"

namespace moerun::cli {
namespace {

struct PlanOptions {
  std::string file;
  bool json = false;
  bool ranks = false;
  double peak_tflops = 0, mfu = 0, tokens = 0;
};

int RunPlan(const PlanOptions& opts) {
  LoadedJobSpec loaded = LoadJobSpecFile(opts.file);
  std::fputs(loaded.Report().c_str(), stderr);
  if (!loaded.ok()) return kExitInvalidConfig;
  if (Status gpu = trainer::TrainerSupport(loaded.spec); !gpu.ok()) {
    std::fprintf(stderr, "moerun plan: note: not trainable by this version yet: %s\n",
                 gpu.message().c_str());
  }

  PlanReportOptions report;
  report.every_rank = opts.ranks;
  const int cost_flags = (opts.peak_tflops > 0) + (opts.mfu > 0) + (opts.tokens > 0);
  if (cost_flags != 0 && cost_flags != 3) {
    std::fprintf(
        stderr, "moerun plan: --gpu-peak-tflops, --mfu and --tokens go together; give all three\n");
    return kExitInvalidConfig;
  }
  JobPlan plan = MakeJobPlan(loaded.spec);
  if (cost_flags == 3) {
    report.cost = EstimateRunCost(plan, opts.peak_tflops, opts.mfu, opts.tokens);
    report.peak_tflops = opts.peak_tflops;
    report.mfu = opts.mfu;
    report.tokens = opts.tokens;
  }
  if (opts.json) {
    std::cout << PlanJson(loaded.spec, plan, report).dump(2) << "\n";
  } else {
    std::cout << PlanText(loaded.spec, plan, report);
  }
  return kExitOk;
}

}  // namespace

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Print placement, parameter counts, memory per device and FLOPs of a job");
  cmd->add_option("file", opts->file, "job spec YAML file")->required();
  cmd->add_flag("--json", opts->json, "print JSON (every rank's placement included)");
  cmd->add_flag("--ranks", opts->ranks, "list every rank instead of one line per stage");
  cmd->add_option("--gpu-peak-tflops", opts->peak_tflops,
                  "peak TFLOP/s of one device (e.g. 989 for H800 bf16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--mfu", opts->mfu, "model FLOPs utilization, 0 < MFU <= 1")
      ->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--tokens", opts->tokens, "tokens to train on (e.g. 14.8e12)")
      ->check(CLI::PositiveNumber);
  cmd->callback([opts, exit_code] { *exit_code = RunPlan(*opts); });
}

}  // namespace moerun::cli
