// moerun checkpoint list --run-dir DIR
// moerun checkpoint digest --run-dir DIR [--step S]
#include <cstdio>
#include <optional>

#include "common/exit_codes.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/run_dir.h"
#include "worker/checkpoint/digest.h"

namespace moerun::cli {
namespace {

struct CheckpointArgs {
  std::string run_dir;
  std::optional<int64_t> step;
};

int RunList(const CheckpointArgs& a) {
  auto run = OpenRun(a.run_dir);
  if (!run.ok()) return Fail("checkpoint", run.status());
  // A shard that cannot be opened is listed as such, and the steps of the others are marked
  // partial: what is readable is still shown.
  std::vector<std::string> unreadable;
  auto ckpts = checkpoint::RunCheckpoints::OpenReadable(run->checkpoint_dir, &unreadable);
  if (!ckpts.ok()) return Fail("checkpoint", ckpts.status());
  for (const auto& u : unreadable)
    std::printf("shard %s\n  unreadable: its steps cannot be restored\n", u.c_str());
  auto steps = ckpts->shards() > 0 ? ckpts->CompleteSteps() : std::vector<int64_t>{};
  if (!steps.ok()) return Fail("checkpoint", steps.status());
  std::printf("%-10s %-10s %-12s %s\n", "step", "entries", "MiB", "state");
  for (int64_t s : steps.value()) {
    auto entries = ckpts->ReadStep(s);
    if (!entries.ok()) {
      std::printf("%-10lld %-10s %-12s refused: %s\n", (long long)s, "-", "-",
                  entries.status().message().c_str());
      continue;
    }
    double bytes = 0;
    for (const auto& e : entries.value()) bytes += double(e.bytes.size());
    std::printf(
        "%-10lld %-10zu %-12.2f %s\n", (long long)s, entries->size(), bytes / (1 << 20),
        unreadable.empty()
            ? "ok"
            : ("partial: " + std::to_string(unreadable.size()) + " shard(s) unreadable").c_str());
  }
  return unreadable.empty() ? kExitOk : kExitBadCheckpoint;
}

int RunDigest(const CheckpointArgs& a) {
  auto rs = OpenRunStep(a.run_dir, a.step);
  if (!rs.ok()) return Fail("checkpoint", rs.status());
  std::vector<const checkpoint::Entry*> ptrs;
  for (const auto& e : rs->entries) ptrs.push_back(&e);
  std::printf("%s  step %lld\n", checkpoint::WeightsDigest(ptrs).c_str(), (long long)rs->step);
  return kExitOk;
}

}  // namespace

void AddCheckpointCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("checkpoint", "List and fingerprint a run's checkpoints");
  cmd->require_subcommand(1);
  auto list = std::make_shared<CheckpointArgs>();
  CLI::App* l = cmd->add_subcommand("list", "Every complete step, verified");
  l->add_option("--run-dir", list->run_dir, "the run directory")->required();
  l->callback([list, exit_code] { *exit_code = RunList(*list); });
  auto digest = std::make_shared<CheckpointArgs>();
  CLI::App* d = cmd->add_subcommand("digest", "SHA-256 of all weights in name order");
  d->add_option("--run-dir", digest->run_dir, "the run directory")->required();
  d->add_option("--step", digest->step, "a complete step (default: the newest readable)");
  d->callback([digest, exit_code] { *exit_code = RunDigest(*digest); });
}

}  // namespace moerun::cli
