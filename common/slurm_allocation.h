// SlurmAllocation: the Slurm allocation `moerun slurm` runs in (docs/cluster.md), read from
// the environment Slurm gives a batch script (sbatch) or an salloc shell. Parsing is pure:
// the environment comes in as a lookup, so tests need no Slurm. Every error names the
// variable, its value and what to do.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace moerun {

// At most this many hosts in one allocation's node list (a bound on what a hostile or broken
// hostlist expression can expand to).
inline constexpr size_t kMaxSlurmNodes = 65536;

struct SlurmAllocation {
  std::string job_id;              // SLURM_JOB_ID
  std::vector<std::string> nodes;  // SLURM_JOB_NODELIST, expanded, in Slurm's order
  std::vector<int64_t> cpus;       // CPUs per node, same order (SLURM_JOB_CPUS_PER_NODE)
  int64_t gpus_per_node = 0;       // SLURM_GPUS_PER_NODE, else SLURM_GPUS_ON_NODE; 0: none
  std::string this_node;           // SLURMD_NODENAME: the node this process runs on
  int64_t restart_count = 0;       // SLURM_RESTART_COUNT: times the job was requeued
};

using EnvLookup = std::function<const char*(const char*)>;

// InvalidArgument when SLURM_JOB_ID is unset (not inside an allocation) or a variable cannot be
// read.
Result<SlurmAllocation> ReadSlurmAllocation(const EnvLookup& env);

// Slurm's hostlist expressions: "n1,n2", "n[1-3]", "gpu[01-02,7]", "r[1-2]-n[1-2]" (bracket
// groups multiply). Zero padding follows the range's first number.
Result<std::vector<std::string>> ExpandHostlist(std::string_view list);

// SLURM_JOB_CPUS_PER_NODE: "2(x3),4" -> 2 2 2 4; must describe exactly `nodes` nodes.
Result<std::vector<int64_t>> ExpandCpusPerNode(std::string_view text, size_t nodes);

}  // namespace moerun
