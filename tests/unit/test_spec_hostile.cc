// Hostile or broken files: each must give a clean diagnostic, never a crash or a hang.
#include <doctest/doctest.h>

#include <string>

#include "common/limits.h"
#include "common/spec_expansion.h"
#include "common/spec_loader.h"

namespace {

moerun::LoadedJobSpec Load(const std::string& text) {
  return moerun::LoadJobSpecText(text, "x.yaml");
}

bool Mentions(const moerun::LoadedJobSpec& l, const std::string& what) {
  for (const auto& d : l.diagnostics)
    if (d.message.find(what) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("empty and comment-only files") {
  CHECK(Mentions(Load(""), "empty"));
  CHECK(Mentions(Load("# nothing here\n"), "empty"));
}

TEST_CASE("binary junk and NUL bytes") {
  std::string junk("job:\n  name: a\x00\x01\xff\xfe", 18);
  auto l = Load(junk);
  REQUIRE_FALSE(l.ok());
  CHECK(Mentions(l, "not a text file"));
  CHECK(l.diagnostics[0].pos.line == 2);
  std::string bad_utf8 = "job:\n  name: \xc3\x28\n";
  CHECK(Mentions(Load(bad_utf8), "not UTF-8"));
}

TEST_CASE("a 100 MB file is refused by size without parsing") {
  std::string big(100u << 20, '#');
  auto l = Load(big);
  REQUIRE_FALSE(l.ok());
  CHECK(Mentions(l, "at most " + std::to_string(moerun::kMaxJobSpecBytes) + " bytes"));
}

TEST_CASE("deep nesting is refused before the parser recurses") {
  std::string flow = "job: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  CHECK(Mentions(Load(flow), "nested deeper"));
  std::string block;
  for (int i = 0; i < 200; ++i) block += std::string(2 * i, ' ') + "k" + std::to_string(i) + ":\n";
  CHECK(Mentions(Load(block), "nesting deeper"));
}

TEST_CASE("malformed YAML reports the parser's position") {
  auto l = Load("job:\n  name: a\nmodel: {vocab_size: 3\n");
  REQUIRE_FALSE(l.ok());
  CHECK(Mentions(l, "malformed YAML"));
  CHECK(l.diagnostics[0].pos.in_file());
}

TEST_CASE("inputs that make yaml-cpp 0.7's multi-document loop spin are refused") {
  // A flow-entry token at a document start loops forever in YAML::LoadAll (found by fuzzing).
  CHECK(Mentions(Load(",\n"), "malformed YAML"));
  CHECK(Mentions(Load("  ,  expert_hidden: 96\n"), "malformed YAML"));
  CHECK(Mentions(Load("--- a\n--- ,\n"), "a second YAML document"));
  CHECK(Mentions(Load("a: 1\n...\n,\n"), "a second YAML document"));
  CHECK_FALSE(Mentions(Load("---\njob: {name: a}\n...\n# trailing comment\n"), "second"));
}

TEST_CASE("the top level must be a mapping") {
  CHECK(Mentions(Load("- a\n- b\n"), "expected a mapping of keys"));
  CHECK(Mentions(Load("just a string\n"), "expected a mapping of keys"));
}

TEST_CASE("aliases and anchors do not explode") {
  std::string text =
      "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\njob: *c\n";
  auto l = Load(text);
  CHECK_FALSE(l.ok());
}

TEST_CASE("aliases count as what they repeat: a billion laughs, one long string 5,000 times") {
  // Each level repeats the one below ten times: 10^9 values from a few hundred bytes.
  std::string laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    const char prev = char(c - 1);
    laughs += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) laughs += std::string(i ? ", *" : "*") + prev;
    laughs += "]\n";
  }
  auto l = Load(laughs);
  REQUIRE_FALSE(l.ok());
  CHECK(Mentions(l, "expands the spec past 65536 values"));
  CHECK(l.diagnostics[0].pos.line > 1);

  // issue 19's case: data.exclude repeating one 100 KB string (119 KB on disk, 500 MB read).
  std::string one =
      "job:\n  name: a\nx: &long \"" + std::string(100000, 'y') + "\"\ndata:\n  exclude:\n";
  for (int i = 0; i < 5000; ++i) one += "    - *long\n";
  auto r = Load(one);
  REQUIRE_FALSE(r.ok());
  CHECK(Mentions(r, "alias *long expands the spec past 1048576 bytes"));
  CHECK(Mentions(r, "100000 bytes each time"));
  CHECK(r.diagnostics[0].pos.line == 15);  // the 10th alias crosses 1 MiB

  // A few aliases of short values are fine.
  auto fine = moerun::CheckSpecExpansion("a: &x [1, 2]\nb: *x\nc: *x\n");
  CHECK(fine.ok);
  CHECK(fine.nodes == 13);  // the map, its 3 keys, 3 lists of 1 + 2 (one written, two aliased)
  CHECK(fine.bytes == 9);   // "a", "b", "c" and 1, 2 three times
}

TEST_CASE("diagnostics are capped") {
  std::string text = "job:\n  name: a\n";
  for (int i = 0; i < 500; ++i) text += "unknown" + std::to_string(i) + ": 1\n";
  auto l = Load(text);
  CHECK(l.diagnostics.size() == moerun::kMaxSpecDiagnostics);
  CHECK(l.dropped_diagnostics > 0);
  CHECK(l.Report().find("more diagnostics not shown") != std::string::npos);
}

TEST_CASE("missing and unreadable files") {
  auto l = moerun::LoadJobSpecFile("/nonexistent/job.yaml");
  REQUIRE_FALSE(l.ok());
  CHECK(l.diagnostics[0].ToString() == "/nonexistent/job.yaml: error: cannot open: no such file");
  auto d = moerun::LoadJobSpecFile("/tmp");
  CHECK(Mentions(d, "not a regular file"));
}
