#include "coordinator/jobs/hang_diagnosis.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

namespace moerun::coordinator {
namespace {

struct Call {
  std::string op, group;
  int64_t group_seq = 0, peer = -1;
  bool running = false;  // still in it, or it ended in failure (a wait that gave up)
  bool failed = false;
  double age_ms = 0, took_ms = 0;
  std::string Name() const { return op + " " + group + " #" + std::to_string(group_seq); }
};

std::string Seconds(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000.0);
  return buf;
}

std::string RankList(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  return out;
}

Call Read(const nlohmann::json& e) {
  Call c;
  c.op = e.value("op", "?");
  c.group = e.value("group", "?");
  c.group_seq = e.value("group_seq", int64_t(0));
  c.peer = e.value("peer", int64_t(-1));
  // A call that ended in failure (its data-plane timeout, an abort) was a wait too.
  c.failed = !e.value("ok", true);
  c.running = e.value("running", false) || c.failed;
  c.age_ms = e.value("age_ms", 0.0);
  c.took_ms = e.value("took_ms", 0.0);
  return c;
}

}  // namespace

std::string DiagnoseHang(const nlohmann::json& ranks, int world) {
  std::map<int, Call> last;                     // each answering rank's newest call
  std::map<std::string, std::set<int>> groups;  // group name -> ranks that used it
  std::vector<int> silent;                      // no answer, or nothing recorded
  for (int r = 0; r < world; ++r) {
    const std::string key = std::to_string(r);
    if (!ranks.is_object() || !ranks.contains(key) || !ranks[key].is_array() ||
        ranks[key].empty()) {
      silent.push_back(r);
      continue;
    }
    for (const auto& e : ranks[key])
      if (e.is_object()) groups[e.value("group", "?")].insert(r);
    last[r] = Read(ranks[key].back());
  }
  // Waiting ranks by the call they wait in; the others are outside the data plane.
  std::map<std::string, std::vector<int>> waits;
  std::vector<int> outside;
  for (const auto& [r, c] : last) (c.running ? waits[c.Name()] : outside).push_back(r);

  auto state_of = [&](int r) -> std::string {
    auto it = last.find(r);
    if (it == last.end()) return "rank " + std::to_string(r) + " has no record (no answer)";
    const Call& c = it->second;
    if (c.running) {
      return "rank " + std::to_string(r) + (c.failed ? " gave up waiting in " : " waits in ") +
             c.Name();
    }
    return "rank " + std::to_string(r) + " is not in the data plane (its last call, " + c.Name() +
           ", ended " + Seconds(c.age_ms - c.took_ms) + " ago)";
  };

  // Who did not arrive: for the longest wait, the members of its group (or its peer) that are
  // not in the same call.
  std::string wait_name;
  std::vector<int> waiting;
  double longest = -1;
  for (const auto& [name, rs] : waits) {
    const Call& c = last[rs.front()];
    if (c.age_ms > longest) {
      longest = c.age_ms;
      wait_name = name;
      waiting = rs;
    }
  }
  std::vector<int> missing;
  if (!waiting.empty()) {
    const Call& c = last[waiting.front()];
    std::set<int> members;
    if (c.peer >= 0 && (c.op == "send" || c.op == "recv" || c.op == "send_recv")) {
      // A point-to-point call names its peer within its group; in "world" that is the rank.
      if (c.group == "world") members.insert(int(c.peer));
    } else {
      members = groups[c.group];
    }
    for (int m : members) {
      auto it = last.find(m);
      const bool there = it != last.end() && it->second.running && it->second.Name() == wait_name;
      if (!there && std::find(waiting.begin(), waiting.end(), m) == waiting.end())
        missing.push_back(m);
    }
  }
  if (missing.empty()) {  // nobody in that group is missing: blame who is outside, or silent
    missing = outside;
    missing.insert(missing.end(), silent.begin(), silent.end());
  }
  std::string out;
  if (!missing.empty()) {
    out = RankList(missing) + " did not arrive";
  } else {
    out = "every rank waits in the data plane";
  }
  if (!waiting.empty()) {
    out += ": " + RankList(waiting) + " wait" + (waiting.size() == 1 ? "s" : "") + " in " +
           wait_name + " (" + Seconds(longest) + ")";
  }
  for (int m : missing) out += "; " + state_of(m);
  for (const auto& [name, rs] : waits) {  // the other waits, of ranks not named above
    std::vector<int> others;
    for (int r : rs)
      if (std::find(missing.begin(), missing.end(), r) == missing.end()) others.push_back(r);
    if (name != wait_name && !others.empty())
      out += "; " + RankList(others) + (others.size() == 1 ? " waits in " : " wait in ") + name;
  }
  return out;
}

}  // namespace moerun::coordinator
