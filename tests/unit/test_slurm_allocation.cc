// Reading a Slurm allocation from its environment (common/slurm_allocation.h).
#include <doctest/doctest.h>

#include <map>

#include "common/slurm_allocation.h"

namespace moerun {
namespace {

std::vector<std::string> Hosts(std::string_view list) {
  auto r = ExpandHostlist(list);
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  return r.value();
}

TEST_CASE("hostlist expressions expand as Slurm's do") {
  using V = std::vector<std::string>;
  CHECK(Hosts("n1") == V{"n1"});
  CHECK(Hosts("n1,n2") == V{"n1", "n2"});
  CHECK(Hosts("n[1-3]") == V{"n1", "n2", "n3"});
  CHECK(Hosts("gpu[08-10,12]") == V{"gpu08", "gpu09", "gpu10", "gpu12"});
  CHECK(Hosts("a[1-2],b7,c[3]") == V{"a1", "a2", "b7", "c3"});
  CHECK(Hosts("r[1-2]-n[1-2]") == V{"r1-n1", "r1-n2", "r2-n1", "r2-n2"});
  for (const char* bad :
       {"n[1-", "n[3-1]", "n[a-b]", "n]1[", "n[[1]]", "n1,,n2", "n[1-99999999]"}) {
    auto r = ExpandHostlist(bad);
    CHECK_MESSAGE(!r.ok(), bad);
  }
}

TEST_CASE("CPUs per node: repeats expand and must match the node count") {
  CHECK(ExpandCpusPerNode("2(x3),4", 4).value() == std::vector<int64_t>{2, 2, 2, 4});
  CHECK(ExpandCpusPerNode("16", 1).value() == std::vector<int64_t>{16});
  CHECK(!ExpandCpusPerNode("2(x3)", 2).ok());
  CHECK(!ExpandCpusPerNode("2(x3", 3).ok());
  CHECK(!ExpandCpusPerNode("", 1).ok());
  CHECK(!ExpandCpusPerNode("0", 1).ok());
}

TEST_CASE("an allocation from the environment, and what is missing named") {
  std::map<std::string, std::string> env = {{"SLURM_JOB_ID", "77"},
                                            {"SLURM_JOB_NODELIST", "n[1-3]"},
                                            {"SLURM_JOB_CPUS_PER_NODE", "8(x3)"},
                                            {"SLURM_GPUS_PER_NODE", "h100:4"},
                                            {"SLURMD_NODENAME", "n1"},
                                            {"SLURM_RESTART_COUNT", "2"}};
  auto lookup = [&](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto a = ReadSlurmAllocation(lookup);
  REQUIRE(a.ok());
  CHECK(a->job_id == "77");
  CHECK(a->nodes == std::vector<std::string>{"n1", "n2", "n3"});
  CHECK(a->cpus == std::vector<int64_t>{8, 8, 8});
  CHECK(a->gpus_per_node == 4);
  CHECK(a->this_node == "n1");
  CHECK(a->restart_count == 2);

  env.erase("SLURM_GPUS_PER_NODE");
  env["SLURM_GPUS_ON_NODE"] = "2";
  CHECK(ReadSlurmAllocation(lookup)->gpus_per_node == 2);
  env["SLURM_GPUS_ON_NODE"] = "two";
  CHECK(ReadSlurmAllocation(lookup).status().message().find("SLURM_GPUS_ON_NODE='two'") !=
        std::string::npos);
  env.erase("SLURM_GPUS_ON_NODE");
  env["SLURM_JOB_CPUS_PER_NODE"] = "8(x2)";
  CHECK(ReadSlurmAllocation(lookup).status().message().find("2 entries for 3 nodes") !=
        std::string::npos);
  env.erase("SLURM_JOB_ID");
  auto outside = ReadSlurmAllocation(lookup);
  CHECK(outside.status().code() == Status::Code::kInvalidArgument);
  CHECK(outside.status().message().find("moerun local") != std::string::npos);
}

}  // namespace
}  // namespace moerun
