#include "common/spec_expansion.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <map>
#include <sstream>
#include <vector>

#include "common/limits.h"

namespace moerun {
namespace {

struct Cost {
  uint64_t nodes = 0, bytes = 0;
};

// Thrown out of the parser's callbacks to stop at the first node past a limit.
struct OverLimit {
  SpecExpansionCheck check;
};

class ExpansionCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnAnchor(const YAML::Mark&, const std::string& name) override { pending_name_ = name; }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Done(mark, anchor, {1, 0}, "");
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    const Cost cost = it == anchors_.end() ? Cost{1, 0} : it->second;
    const auto name = names_.find(anchor);
    Done(mark, 0, cost, name == names_.end() ? "an alias" : "alias *" + name->second);
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& value) override {
    Done(mark, anchor, {1, value.size()}, "");
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnMapEnd() override { Close(); }

  Cost total() const { return total_; }

 private:
  // A collection still open; its cost grows as its children end (the collection itself
  // counts as one node).
  struct Open_ {
    YAML::Mark mark;
    YAML::anchor_t anchor;
    Cost cost;
  };

  void Name(YAML::anchor_t anchor) {
    if (anchor != 0 && !pending_name_.empty()) names_[anchor] = pending_name_;
    pending_name_.clear();
  }
  void Open(const YAML::Mark& mark, YAML::anchor_t anchor) {
    Name(anchor);
    open_.push_back({mark, anchor, Cost{1, 0}});
    Count(mark, {1, 0}, "");
  }
  void Close() {
    if (open_.empty()) return;
    const Open_ done = open_.back();
    open_.pop_back();
    if (done.anchor != 0) anchors_[done.anchor] = done.cost;
    if (!open_.empty()) Add(&open_.back().cost, done.cost);
  }
  // A node complete at once (a scalar, a null, an alias) worth `cost`.
  void Done(const YAML::Mark& mark, YAML::anchor_t anchor, Cost cost, const std::string& alias) {
    Name(anchor);
    if (anchor != 0) anchors_[anchor] = cost;
    if (!open_.empty()) Add(&open_.back().cost, cost);
    Count(mark, cost, alias);
  }
  static void Add(Cost* to, Cost c) {
    to->nodes += c.nodes;
    to->bytes += c.bytes;
  }
  void Count(const YAML::Mark& mark, Cost cost, const std::string& alias) {
    Add(&total_, cost);
    if (total_.nodes <= kMaxJobSpecNodes && total_.bytes <= kMaxJobSpecBytes) return;
    OverLimit over;
    over.check.ok = false;
    over.check.nodes = total_.nodes;
    over.check.bytes = total_.bytes;
    over.check.line = mark.line + 1;
    over.check.column = mark.column + 1;
    const bool nodes = total_.nodes > kMaxJobSpecNodes;
    const std::string limit = nodes ? std::to_string(kMaxJobSpecNodes) + " values"
                                    : std::to_string(kMaxJobSpecBytes) + " bytes of text";
    over.check.message =
        alias.empty()
            ? "the spec holds more than " + limit + "; a job spec needs far fewer"
            : alias + " expands the spec past " + limit + " (" + std::to_string(cost.nodes) +
                  " values, " + std::to_string(cost.bytes) +
                  " bytes each time it is used): aliases count as what they repeat; write the "
                  "value out once, or repeat it less";
    throw over;
  }

  std::vector<Open_> open_;
  std::map<YAML::anchor_t, Cost> anchors_;
  std::map<YAML::anchor_t, std::string> names_;
  std::string pending_name_;
  Cost total_;
};

}  // namespace

SpecExpansionCheck CheckSpecExpansion(std::string_view text) {
  std::istringstream in{std::string(text)};
  ExpansionCounter counter;
  try {
    YAML::Parser parser(in);
    parser.HandleNextDocument(counter);
  } catch (const OverLimit& over) {
    return over.check;
  } catch (const std::exception&) {
    // A syntax error: YAML::Load reports it with its position.
  }
  SpecExpansionCheck ok;
  ok.nodes = counter.total().nodes;
  ok.bytes = counter.total().bytes;
  return ok;
}

}  // namespace moerun
