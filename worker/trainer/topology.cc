#include "worker/trainer/topology.h"

#include "common/placement.h"

namespace moerun::trainer {

std::string Topology::ShardName() const {
  return "stage-" + std::to_string(stage) + "/dp-" + std::to_string(d % expert);
}

Result<Topology> MakeTopology(const JobSpec& spec, std::unique_ptr<comm::Communicator> world_comm) {
  Topology t;
  t.world = world_comm->size();
  t.rank = world_comm->rank();
  const ModelSpec& m = spec.model;
  if (t.world == 1) {
    t.micro_batches = spec.parallel.data * spec.parallel.micro_batches;
  } else {
    if (t.world != spec.parallel.world_size()) {
      return Status::InvalidArgument(
          "the job needs pipeline x data = " + std::to_string(spec.parallel.world_size()) +
          " ranks, got " + std::to_string(t.world));
    }
    t.pipeline = spec.parallel.pipeline;
    t.data = spec.parallel.data;
    t.expert = m.moe_layers() > 0 ? spec.parallel.expert : 1;
    t.micro_batches = spec.parallel.micro_batches;
  }
  t.stage = t.rank / t.data;
  t.d = t.rank % t.data;
  if (t.stage > 0) t.prev = int((t.stage - 1) * t.data + t.d);
  if (t.stage + 1 < t.pipeline) t.next = int((t.stage + 1) * t.data + t.d);
  const StageLayout layout = SplitLayers(m.n_layers, t.pipeline, m.mtp.depth)[size_t(t.stage)];
  t.range = {layout.layer_begin, layout.layer_end, layout.has_embedding, layout.has_head, 0, -1};
  if (m.moe_layers() > 0) {
    const int64_t per = m.moe.routed_experts / t.expert;
    t.range.expert_begin = (t.d % t.expert) * per;
    t.range.expert_end = t.range.expert_begin + per;
  }
  auto split = [&](std::vector<int> members,
                   const std::string& name) -> Result<std::unique_ptr<comm::Communicator>> {
    return world_comm->Split(members, name);
  };
  const int base = int(t.stage * t.data);
  std::vector<int> data_members, expert_members, replica_members;
  for (int64_t i = 0; i < t.data; ++i) data_members.push_back(base + int(i));
  const int64_t group_first = (t.d / t.expert) * t.expert;
  for (int64_t i = 0; i < t.expert; ++i) expert_members.push_back(base + int(group_first + i));
  for (int64_t i = t.d % t.expert; i < t.data; i += t.expert)
    replica_members.push_back(base + int(i));
  const std::string s = std::to_string(t.stage);
  auto dg = split(data_members, "data/" + s);
  if (!dg.ok()) return dg.status();
  auto eg = split(expert_members, "expert/" + s + "/" + std::to_string(t.d / t.expert));
  if (!eg.ok()) return eg.status();
  auto rg = split(replica_members, "replica/" + s + "/" + std::to_string(t.d % t.expert));
  if (!rg.ok()) return rg.status();
  if (m.mtp.depth > 0 && t.pipeline > 1 && (t.first_stage() || t.last_stage())) {
    const std::vector<int> ends = {int(t.d), int((t.pipeline - 1) * t.data + t.d)};
    auto emb = split(ends, "embedding/" + std::to_string(t.d));
    if (!emb.ok()) return emb.status();
    t.embedding_group = std::move(emb.value());
  }
  t.data_group = std::move(dg.value());
  t.expert_group = std::move(eg.value());
  t.replica_group = std::move(rg.value());
  t.world_comm = std::move(world_comm);
  return t;
}

}  // namespace moerun::trainer
