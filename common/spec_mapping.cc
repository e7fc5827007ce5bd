#include "common/spec_mapping.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>

namespace moerun {
namespace {

std::string Quote(std::string_view s) {
  constexpr std::size_t kMaxShown = 40;
  std::string out = "'";
  out += s.size() > kMaxShown ? std::string(s.substr(0, kMaxShown)) + "..." : std::string(s);
  out += "'";
  return out;
}

// Describes a node's kind for "expected X, got Y" messages.
std::string Describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing (an empty value)";
    case YAML::NodeType::Scalar:
      return Quote(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      break;
  }
  return "an undefined value";
}

bool IsQuoted(const YAML::Node& n) { return n.Tag() == "!"; }

std::string FormatReal(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

SourcePos ToSourcePos(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return {};
  return {mark.line + 1, mark.column + 1};
}

std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string ClosestMatch(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& c : candidates) {
    std::size_t d = EditDistance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  // A typo changes a few characters; allow about a third of the word.
  std::size_t allowed = std::max<std::size_t>(2, word.size() / 3);
  return best_d <= allowed ? best : std::string();
}

SpecMapping::SpecMapping(const YAML::Node* node_ptr, std::string path, SourcePos pos,
                         DiagnosticSink* sink, SourceMap* map)
    : path_(std::move(path)), pos_(pos), sink_(sink), map_(map) {
  if (node_ptr == nullptr || !node_ptr->IsDefined()) return;
  const YAML::Node& node = *node_ptr;
  if (node.IsNull()) {  // "section:" with nothing under it: an empty section
    present_ = true;
    return;
  }
  if (!node.IsMap()) {
    sink_->Error(pos_, path_, "expected a mapping of keys, got " + Describe(node));
    return;
  }
  present_ = true;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies: the iterator's pair is a temporary proxy, references into it would dangle.
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    SourcePos kpos = ToSourcePos(k.Mark());
    if (!k.IsScalar()) {
      sink_->Error(kpos, path_, "keys must be plain names, got " + Describe(k));
      continue;
    }
    const std::string& key = k.Scalar();
    if (const Entry* prev = Find(key)) {
      sink_->Error(kpos, FieldPath(key),
                   "duplicate key (first written at line " + std::to_string(prev->key_pos.line) +
                       "); each key may appear once");
      continue;
    }
    entries_.push_back({key, v, kpos});
  }
}

std::string SpecMapping::FieldPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

SpecMapping::Entry* SpecMapping::Find(std::string_view key) {
  for (auto& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}

const SpecMapping::Entry* SpecMapping::Find(std::string_view key) const {
  for (const auto& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}

SourcePos SpecMapping::ValuePos(const Entry& e) const {
  if (e.value.IsNull()) return e.key_pos;  // an empty value's mark is the next token
  SourcePos p = ToSourcePos(e.value.Mark());
  return p.in_file() ? p : e.key_pos;
}

SpecMapping::Entry* SpecMapping::Take(std::string_view key, bool required, const char* what) {
  known_keys_.emplace_back(key);
  Entry* e = Find(key);
  if (e == nullptr) {
    if (required) {
      sink_->Error(pos_, FieldPath(key), std::string("required key is missing (") + what + ")");
    }
    return nullptr;
  }
  e->used = true;
  map_->Set(FieldPath(key), e->key_pos);
  return e;
}

const std::string* SpecMapping::Scalar(Entry* e, const char* what) {
  if (!e->value.IsScalar()) {
    sink_->Error(ValuePos(*e), FieldPath(e->key),
                 std::string("expected ") + what + ", got " + Describe(e->value));
    return nullptr;
  }
  return &e->value.Scalar();
}

const std::string* SpecMapping::PlainScalar(Entry* e, const char* what) {
  const std::string* s = Scalar(e, what);
  if (s != nullptr && IsQuoted(e->value)) {
    sink_->Error(ValuePos(*e), FieldPath(e->key),
                 std::string("expected ") + what + ", got the quoted string " + Quote(*s) +
                     "; remove the quotes");
    return nullptr;
  }
  return s;
}

bool SpecMapping::Int(std::string_view key, int64_t* out, IntRange range, bool required) {
  Entry* e = Take(key, required, "an integer");
  if (e == nullptr) return false;
  const std::string* s = PlainScalar(e, "an integer");
  if (s == nullptr) return false;
  std::string_view text = *s;
  if (text.size() > 1 && text[0] == '+' && text[1] >= '0' && text[1] <= '9') text.remove_prefix(1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) {
    sink_->Error(ValuePos(*e), FieldPath(key),
                 "integer " + Quote(*s) + " is out of range; " + "must be between " +
                     std::to_string(range.min) + " and " + std::to_string(range.max));
    return false;
  }
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    sink_->Error(ValuePos(*e), FieldPath(key), "expected an integer, got " + Quote(*s));
    return false;
  }
  if (v < range.min || v > range.max) {
    std::string rule =
        range.max == std::numeric_limits<int64_t>::max()
            ? "must be at least " + std::to_string(range.min)
            : "must be between " + std::to_string(range.min) + " and " + std::to_string(range.max);
    sink_->Error(ValuePos(*e), FieldPath(key), rule + ", got " + std::to_string(v));
    return false;
  }
  *out = v;
  return true;
}

bool SpecMapping::Real(std::string_view key, double* out, RealRange range, bool required) {
  Entry* e = Take(key, required, "a number");
  if (e == nullptr) return false;
  const std::string* s = PlainScalar(e, "a number");
  if (s == nullptr) return false;
  std::string_view text = *s;
  if (text.size() > 1 && text[0] == '+' && (text[1] == '.' || (text[1] >= '0' && text[1] <= '9'))) {
    text.remove_prefix(1);
  }
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || !std::isfinite(v)) {
    sink_->Error(ValuePos(*e), FieldPath(key), "expected a finite number, got " + Quote(*s));
    return false;
  }
  bool below = range.min_exclusive ? v <= range.min : v < range.min;
  bool above = range.max_exclusive ? v >= range.max : v > range.max;
  if (below || above) {
    std::string lo = (range.min_exclusive ? "greater than " : "at least ") + FormatReal(range.min);
    std::string hi =
        (range.max_exclusive ? " and less than " : " and at most ") + FormatReal(range.max);
    std::string rule =
        range.max == std::numeric_limits<double>::max() ? "must be " + lo : "must be " + lo + hi;
    sink_->Error(ValuePos(*e), FieldPath(key), rule + ", got " + FormatReal(v));
    return false;
  }
  *out = v;
  return true;
}

bool SpecMapping::Bool(std::string_view key, bool* out) {
  Entry* e = Take(key, false, "true or false");
  if (e == nullptr) return false;
  const std::string* s = Scalar(e, "true or false");
  if (s == nullptr) return false;
  std::string lower = *s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!IsQuoted(e->value) && (lower == "true" || lower == "false")) {
    *out = lower == "true";
    return true;
  }
  sink_->Error(ValuePos(*e), FieldPath(key), "expected true or false, got " + Quote(*s));
  return false;
}

bool SpecMapping::String(std::string_view key, std::string* out, bool required) {
  Entry* e = Take(key, required, "a string");
  if (e == nullptr) return false;
  const std::string* s = Scalar(e, "a string");
  if (s == nullptr) return false;
  *out = *s;
  return true;
}

bool SpecMapping::StringList(std::string_view key, std::vector<std::string>* out, bool required) {
  Entry* e = Take(key, required, "a list of strings");
  if (e == nullptr) return false;
  if (e->value.IsNull()) {
    out->clear();
    return true;
  }
  if (!e->value.IsSequence()) {
    sink_->Error(ValuePos(*e), FieldPath(key),
                 "expected a list of strings (write [" +
                     (e->value.IsScalar() ? e->value.Scalar() : std::string("...")) +
                     "] for one), got " + Describe(e->value));
    return false;
  }
  std::vector<std::string> values;
  bool ok = true;
  for (std::size_t i = 0; i < e->value.size(); ++i) {
    const YAML::Node& item = e->value[i];
    std::string item_path = FieldPath(key) + "[" + std::to_string(i) + "]";
    SourcePos ipos = ToSourcePos(item.Mark());
    if (!ipos.in_file()) ipos = ValuePos(*e);
    if (!item.IsScalar() || item.Scalar().empty()) {
      sink_->Error(ipos, item_path, "expected a non-empty string, got " + Describe(item));
      ok = false;
      continue;
    }
    values.push_back(item.Scalar());
  }
  if (ok) *out = std::move(values);
  return ok;
}

bool SpecMapping::EnumImpl(std::string_view key, int* out,
                           const std::vector<std::pair<std::string, int>>& values) {
  std::vector<std::string> names;
  for (const auto& v : values) names.push_back(v.first);
  std::string allowed;
  for (const auto& n : names) allowed += (allowed.empty() ? "" : "|") + n;
  Entry* e = Take(key, false, allowed.c_str());
  if (e == nullptr) return false;
  const std::string* s = Scalar(e, ("one of " + allowed).c_str());
  if (s == nullptr) return false;
  for (const auto& [name, v] : values) {
    if (*s == name) {
      *out = v;
      return true;
    }
  }
  std::string msg = "must be one of " + allowed + ", got " + Quote(*s);
  std::string hint = ClosestMatch(*s, names);
  if (!hint.empty()) msg += " (did you mean '" + hint + "'?)";
  sink_->Error(ValuePos(*e), FieldPath(key), msg);
  return false;
}

SpecMapping SpecMapping::Child(std::string_view key, bool required) {
  Entry* e = Take(key, required, "a section");
  if (e == nullptr) return SpecMapping(nullptr, FieldPath(key), pos_, sink_, map_);
  return SpecMapping(&e->value, FieldPath(key), e->key_pos, sink_, map_);
}

void SpecMapping::RejectUnknownKeys() {
  for (const auto& e : entries_) {
    if (e.used) continue;
    std::string msg = "unknown key '" + e.key + "'";
    std::string hint = ClosestMatch(e.key, known_keys_);
    if (!hint.empty()) {
      msg += " (did you mean '" + hint + "'?)";
    } else {
      std::string allowed;
      for (const auto& k : known_keys_) allowed += (allowed.empty() ? "" : ", ") + k;
      msg += "; allowed here: " + allowed;
    }
    sink_->Error(e.key_pos, FieldPath(e.key), msg);
  }
}

}  // namespace moerun
