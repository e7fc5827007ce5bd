#include "common/slurm_allocation.h"

#include <charconv>

namespace moerun {
namespace {

bool ParseCount(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && *out >= 0;
}

// Splits at commas outside brackets.
std::vector<std::string_view> TopLevelItems(std::string_view list, bool* balanced) {
  std::vector<std::string_view> items;
  int depth = 0;
  size_t start = 0;
  *balanced = true;
  for (size_t i = 0; i <= list.size(); ++i) {
    const char c = i < list.size() ? list[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0 || depth > 1) *balanced = false;
    if (c == ',' && depth == 0) {
      items.push_back(list.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) *balanced = false;
  return items;
}

// "01-03,7" -> "01" "02" "03" "7".
Status ExpandRanges(std::string_view ranges, std::vector<std::string>* out) {
  size_t start = 0;
  for (size_t i = 0; i <= ranges.size(); ++i) {
    if (i < ranges.size() && ranges[i] != ',') continue;
    const std::string_view part = ranges.substr(start, i - start);
    start = i + 1;
    const size_t dash = part.find('-');
    const std::string_view lo_s = part.substr(0, dash);
    const std::string_view hi_s = dash == std::string_view::npos ? lo_s : part.substr(dash + 1);
    int64_t lo = 0, hi = 0;
    if (!ParseCount(lo_s, &lo) || !ParseCount(hi_s, &hi) || hi < lo)
      return Status::InvalidArgument("bad range '" + std::string(part) + "'");
    if (hi - lo >= int64_t(kMaxSlurmNodes))
      return Status::InvalidArgument("range '" + std::string(part) + "' is too large");
    for (int64_t v = lo; v <= hi; ++v) {
      std::string n = std::to_string(v);
      if (n.size() < lo_s.size()) n.insert(0, lo_s.size() - n.size(), '0');
      out->push_back(std::move(n));
      if (out->size() > kMaxSlurmNodes)
        return Status::InvalidArgument("more than " + std::to_string(kMaxSlurmNodes) + " hosts");
    }
  }
  return Status::OK();
}

// One item: literal text and bracket groups, each group multiplying the names so far.
Status ExpandItem(std::string_view item, std::vector<std::string>* out) {
  std::vector<std::string> names{""};
  size_t i = 0;
  while (i < item.size()) {
    if (item[i] != '[') {
      const size_t next = item.find('[', i);
      const std::string_view lit = item.substr(i, next - i);
      for (auto& n : names) n += lit;
      i = next == std::string_view::npos ? item.size() : next;
      continue;
    }
    const size_t close = item.find(']', i);
    std::vector<std::string> values;
    MOERUN_RETURN_IF_ERROR(ExpandRanges(item.substr(i + 1, close - i - 1), &values));
    if (names.size() * values.size() > kMaxSlurmNodes)
      return Status::InvalidArgument("more than " + std::to_string(kMaxSlurmNodes) + " hosts");
    std::vector<std::string> grown;
    for (const auto& n : names)
      for (const auto& v : values) grown.push_back(n + v);
    names = std::move(grown);
    i = close + 1;
  }
  for (auto& n : names) {
    if (n.empty()) return Status::InvalidArgument("an empty host name");
    out->push_back(std::move(n));
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<std::string>> ExpandHostlist(std::string_view list) {
  bool balanced = true;
  const auto items = TopLevelItems(list, &balanced);
  if (!balanced)
    return Status::InvalidArgument("unbalanced brackets in '" + std::string(list) + "'");
  std::vector<std::string> out;
  for (const auto& item : items) {
    Status s = ExpandItem(item, &out);
    if (!s.ok()) return s.WithContext("hostlist '" + std::string(list) + "'");
    if (out.size() > kMaxSlurmNodes)
      return Status::InvalidArgument("hostlist '" + std::string(list) + "': more than " +
                                     std::to_string(kMaxSlurmNodes) + " hosts");
  }
  return out;
}

Result<std::vector<int64_t>> ExpandCpusPerNode(std::string_view text, size_t nodes) {
  std::vector<int64_t> out;
  size_t start = 0;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("SLURM_JOB_CPUS_PER_NODE='" + std::string(text) + "': " + why);
  };
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ',') continue;
    std::string_view part = text.substr(start, i - start);
    start = i + 1;
    int64_t count = 1, cpus = 0;
    if (const size_t x = part.find("(x"); x != std::string_view::npos) {
      if (part.back() != ')' || !ParseCount(part.substr(x + 2, part.size() - x - 3), &count))
        return bad("bad repeat in '" + std::string(part) + "'");
      part = part.substr(0, x);
    }
    if (!ParseCount(part, &cpus) || cpus == 0)
      return bad("bad CPU count '" + std::string(part) + "'");
    if (out.size() + size_t(count) > nodes)
      return bad("more entries than the " + std::to_string(nodes) + " nodes");
    out.insert(out.end(), size_t(count), cpus);
  }
  if (out.size() != nodes)
    return bad(std::to_string(out.size()) + " entries for " + std::to_string(nodes) + " nodes");
  return out;
}

Result<SlurmAllocation> ReadSlurmAllocation(const EnvLookup& env) {
  auto get = [&](const char* name) -> std::string {
    const char* v = env(name);
    return v ? v : "";
  };
  SlurmAllocation a;
  a.job_id = get("SLURM_JOB_ID");
  if (a.job_id.empty()) {
    return Status::InvalidArgument(
        "SLURM_JOB_ID is not set: `moerun slurm` runs inside a Slurm allocation (a script given to "
        "sbatch, such as scripts/moerun.sbatch, or an salloc shell); on one machine use `moerun "
        "local`");
  }
  const std::string list = get("SLURM_JOB_NODELIST");
  if (list.empty())
    return Status::InvalidArgument("SLURM_JOB_NODELIST is not set in job " + a.job_id);
  auto nodes = ExpandHostlist(list);
  if (!nodes.ok()) return nodes.status().WithContext("SLURM_JOB_NODELIST");
  a.nodes = std::move(nodes.value());
  auto cpus = ExpandCpusPerNode(get("SLURM_JOB_CPUS_PER_NODE"), a.nodes.size());
  if (!cpus.ok()) return cpus.status();
  a.cpus = std::move(cpus.value());
  for (const char* name : {"SLURM_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE"}) {
    std::string v = get(name);
    if (v.empty()) continue;
    // "4", "a100:4" or "gpu:a100:4": the count is last.
    const size_t colon = v.rfind(':');
    if (colon != std::string::npos) v = v.substr(colon + 1);
    if (!ParseCount(v, &a.gpus_per_node)) {
      return Status::InvalidArgument(std::string(name) + "='" + get(name) + "' is not a GPU count");
    }
    break;
  }
  a.this_node = get("SLURMD_NODENAME");
  if (a.this_node.empty()) a.this_node = a.nodes.front();
  const std::string restarts = get("SLURM_RESTART_COUNT");
  if (!restarts.empty() && !ParseCount(restarts, &a.restart_count)) {
    return Status::InvalidArgument("SLURM_RESTART_COUNT='" + restarts + "' is not a count");
  }
  return a;
}

}  // namespace moerun
