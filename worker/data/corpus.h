// The training corpus: every token of a job's data, split into train and validation blocks,
// and the sampling of training windows.
//
// Files: data.paths lists files or directories (walked recursively, in sorted path order);
// names matching any data.exclude glob are skipped. `text` files contribute their bytes as
// tokens 0..255; `tokens` files are llm.c / nanoGPT shards (header of 256 int32: magic
// 20240520, version 1, token count; then uint16 tokens) and every token must be < vocab.
// The concatenated stream is cut into blocks; every round(1/val_fraction)-th block is held
// out for validation, so both splits see every part of the data.
//
// Sampling is a pure function of (seed, step, global sequence index): a resumed run, or the
// same run split over data-parallel ranks, sees exactly the same windows. Read-only after
// Load(), so thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/status.h"

namespace moerun::data {

class Corpus {
 public:
  // Reads every file; fails with the file's name on any unreadable or malformed input.
  static Result<Corpus> Load(const DataSpec& spec, int64_t vocab_size, int64_t seq_len);

  // Training window for global sequence `index` of step `step` (0-based): inputs [seq_len]
  // and targets [seq_len] (the inputs shifted by one).
  void SampleTrain(uint64_t seed, int64_t step, int64_t index, int32_t* inputs,
                   int32_t* targets) const;

  // The k-th fixed validation window, k in [0, validation_windows()).
  void ValidationWindow(int64_t k, int32_t* inputs, int32_t* targets) const;
  int64_t validation_windows() const;

  int64_t tokens() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t train_tokens() const;
  const std::vector<std::string>& files() const { return files_; }

 private:
  struct Block {
    int64_t begin, end;  // token range, end exclusive
  };
  std::vector<int32_t> tokens_;
  std::vector<std::string> files_;
  std::vector<Block> train_, val_;
  std::vector<int64_t> train_windows_end_;  // running count of windows through each train block
  int64_t seq_len_ = 0;
};

// The files data.paths names, after exclusions, in sorted order.
Result<std::vector<std::string>> ListDataFiles(const DataSpec& spec);

}  // namespace moerun::data
