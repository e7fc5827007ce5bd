// SpecMapping: a view of one YAML mapping in a job spec that reads typed fields, records
// where each was written, and reports every problem (wrong type, out of range, duplicate
// key, unknown key with a did-you-mean) to a DiagnosticSink instead of throwing.
// Internal to the spec loader; single-threaded.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/spec_diagnostics.h"

namespace moerun {

struct IntRange {
  int64_t min;
  int64_t max;
};
struct RealRange {
  double min;
  double max;
  bool min_exclusive = false;
  bool max_exclusive = false;
};

SourcePos ToSourcePos(const YAML::Mark& mark);

class SpecMapping {
 public:
  // `node` may be null (section absent): every read then leaves its default.
  // `pos` locates the mapping itself for "missing key" errors.
  SpecMapping(const YAML::Node* node, std::string path, SourcePos pos, DiagnosticSink* sink,
              SourceMap* map);

  bool present() const { return present_; }
  const std::string& path() const { return path_; }
  SourcePos pos() const { return pos_; }
  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  // Where `key` is written, or the mapping's own position when it is absent.
  SourcePos KeyPos(std::string_view key) const {
    const Entry* e = Find(key);
    return e != nullptr ? e->key_pos : pos_;
  }

  // Each reader leaves *out unchanged when the key is absent (or invalid) and returns
  // whether a valid value was read. `required` reports an absent key as an error.
  bool Int(std::string_view key, int64_t* out, IntRange range, bool required = false);
  bool Real(std::string_view key, double* out, RealRange range, bool required = false);
  bool Bool(std::string_view key, bool* out);
  bool String(std::string_view key, std::string* out, bool required = false);
  bool StringList(std::string_view key, std::vector<std::string>* out, bool required = false);
  template <typename E>
  bool Enum(std::string_view key, E* out, std::initializer_list<std::pair<const char*, E>> values);

  // The nested mapping under `key` (not present when the key is absent or not a mapping).
  SpecMapping Child(std::string_view key, bool required = false);

  // Reports every key that no reader asked for. Call once, after all reads.
  void RejectUnknownKeys();

 private:
  struct Entry {
    std::string key;
    YAML::Node value;
    SourcePos key_pos;
    bool used = false;
  };
  Entry* Find(std::string_view key);
  const Entry* Find(std::string_view key) const;
  // The entry for `key`, marked used and recorded in the SourceMap; null when absent.
  Entry* Take(std::string_view key, bool required, const char* what);
  // Non-null scalar text, or an error naming `what` was expected.
  const std::string* Scalar(Entry* e, const char* what);
  // Scalar(), also refusing quoted strings (for numbers: "8" is a string, not 8).
  const std::string* PlainScalar(Entry* e, const char* what);
  std::string FieldPath(std::string_view key) const;
  SourcePos ValuePos(const Entry& e) const;
  bool EnumImpl(std::string_view key, int* out,
                const std::vector<std::pair<std::string, int>>& values);

  std::string path_;
  SourcePos pos_;
  DiagnosticSink* sink_;
  SourceMap* map_;
  bool present_ = false;
  std::vector<Entry> entries_;
  std::vector<std::string> known_keys_;  // every key a reader asked for
};

template <typename E>
bool SpecMapping::Enum(std::string_view key, E* out,
                       std::initializer_list<std::pair<const char*, E>> values) {
  std::vector<std::pair<std::string, int>> table;
  for (const auto& [name, v] : values) table.emplace_back(name, static_cast<int>(v));
  int raw = static_cast<int>(*out);
  if (!EnumImpl(key, &raw, table)) return false;
  *out = static_cast<E>(raw);
  return true;
}

// Levenshtein distance; used for did-you-mean suggestions.
std::size_t EditDistance(std::string_view a, std::string_view b);
// The candidate closest to `word` if it is plausibly a typo of it, else empty.
std::string ClosestMatch(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace moerun
