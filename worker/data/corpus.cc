#include "worker/data/corpus.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "worker/model/parameters.h"

namespace moerun::data {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kMinBlockTokens = 8192;

bool Excluded(const fs::path& p, const std::vector<std::string>& globs) {
  const std::string name = p.filename().string();
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

Status ReadBytes(const std::string& path, std::vector<char>* out) {
  // One read of the whole file: a restarted trainer loads the corpus again, on its critical path.
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return Status::IOError("data file " + path + ": cannot open");
  const std::streamoff size = in.tellg();
  if (size < 0) return Status::IOError("data file " + path + ": cannot tell its size");
  out->resize(size_t(size));
  in.seekg(0);
  if (!in.read(out->data(), size)) return Status::IOError("data file " + path + ": read failed");
  return Status::OK();
}

Status AppendShard(const std::string& path, const std::vector<char>& bytes, int64_t vocab,
                   std::vector<int32_t>* tokens) {
  const int64_t header = kShardHeaderInts * 4;
  if (int64_t(bytes.size()) < header) {
    return Status::Corruption("token shard " + path + ": " + std::to_string(bytes.size()) +
                              " bytes, shorter than the 1024-byte header");
  }
  int32_t h[3];
  std::memcpy(h, bytes.data(), sizeof h);
  if (h[0] != kShardMagic || h[1] != kShardVersion) {
    return Status::Corruption("token shard " + path + ": header magic/version " +
                              std::to_string(h[0]) + "/" + std::to_string(h[1]) +
                              ", expected 20240520/1 (llm.c format)");
  }
  const int64_t count = h[2];
  if (count < 0 || header + count * 2 != int64_t(bytes.size())) {
    return Status::Corruption("token shard " + path + ": header says " + std::to_string(count) +
                              " tokens but the file holds " +
                              std::to_string((int64_t(bytes.size()) - header) / 2));
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data()) + header;
  tokens->reserve(tokens->size() + size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    const int32_t t = int32_t(p[2 * i]) | (int32_t(p[2 * i + 1]) << 8);
    if (t >= vocab) {
      return Status::Corruption("token shard " + path + ": token " + std::to_string(t) +
                                " at position " + std::to_string(i) +
                                " is not below model.vocab_size (" + std::to_string(vocab) + ")");
    }
    tokens->push_back(t);
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<std::string>> ListDataFiles(const DataSpec& spec) {
  std::vector<std::string> files;
  for (const auto& root : spec.paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(root, ec);
    if (ec || !fs::exists(st)) return Status::NotFound("data.paths: " + root + " does not exist");
    if (fs::is_directory(st)) {
      for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        if (it->is_regular_file() && !it->is_symlink() && !Excluded(it->path(), spec.exclude)) {
          files.push_back(it->path().string());
        }
      }
      if (ec) return Status::IOError("data.paths: cannot list " + root + ": " + ec.message());
    } else if (!Excluded(root, spec.exclude)) {
      files.push_back(root);
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  if (files.empty()) return Status::NotFound("data.paths: no data files left after data.exclude");
  return files;
}

Result<Corpus> Corpus::Load(const DataSpec& spec, int64_t vocab, int64_t seq_len) {
  auto files = ListDataFiles(spec);
  if (!files.ok()) return files.status();
  Corpus c;
  c.files_ = std::move(files.value());
  c.seq_len_ = seq_len;
  // One allocation for every token: growing the array copies it and faults its pages again.
  uintmax_t total_bytes = 0;
  for (const auto& f : c.files_) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(f, ec);
    if (!ec) total_bytes += size;
  }
  c.tokens_.reserve(size_t(spec.format == DataFormat::kText ? total_bytes : total_bytes / 2));
  std::vector<char> bytes;
  for (const auto& f : c.files_) {
    MOERUN_RETURN_IF_ERROR(ReadBytes(f, &bytes));
    if (spec.format == DataFormat::kText) {
      const size_t at = c.tokens_.size();
      c.tokens_.resize(at + bytes.size());
      std::transform(bytes.begin(), bytes.end(), c.tokens_.begin() + std::ptrdiff_t(at),
                     [](char ch) { return int32_t(static_cast<unsigned char>(ch)); });
    } else {
      MOERUN_RETURN_IF_ERROR(AppendShard(f, bytes, vocab, &c.tokens_));
    }
  }
  const int64_t block = std::max(kMinBlockTokens, 4 * (seq_len + 1));
  const int64_t every =
      spec.val_fraction > 0 ? std::max<int64_t>(2, std::llround(1.0 / spec.val_fraction)) : 0;
  for (int64_t i = 0, begin = 0; begin < c.tokens(); ++i, begin += block) {
    Block b{begin, std::min(begin + block, c.tokens())};
    if (b.end - b.begin < seq_len + 1) continue;  // a tail too short for one window
    (every > 0 && i % every == every - 1 ? c.val_ : c.train_).push_back(b);
  }
  int64_t windows = 0;
  for (const Block& b : c.train_)
    c.train_windows_end_.push_back(windows += b.end - b.begin - seq_len);
  if (c.train_.empty()) {
    return Status::InvalidArgument("data: " + std::to_string(c.tokens()) +
                                   " tokens are too few for one training window of seq_len " +
                                   std::to_string(seq_len) + " + 1");
  }
  return c;
}

void Corpus::SampleTrain(uint64_t seed, int64_t step, int64_t index, int32_t* inputs,
                         int32_t* targets) const {
  uint64_t state =
      seed ^ (uint64_t(step) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(index) * 0xd1b54a32d192ed03ull);
  model::SplitMix64(state);
  // Every training window is equally likely: pick one of them all, then find its block.
  const int64_t pick = int64_t(model::SplitMix64(state) % uint64_t(train_windows_end_.back()));
  const size_t i = static_cast<size_t>(
      std::upper_bound(train_windows_end_.begin(), train_windows_end_.end(), pick) -
      train_windows_end_.begin());
  const int64_t before = i == 0 ? 0 : train_windows_end_[i - 1];
  const int32_t* src = tokens_.data() + train_[i].begin + (pick - before);
  std::copy(src, src + seq_len_, inputs);
  std::copy(src + 1, src + seq_len_ + 1, targets);
}

int64_t Corpus::validation_windows() const {
  int64_t n = 0;
  for (const Block& b : val_) n += (b.end - b.begin - 1) / seq_len_;
  return n;
}

void Corpus::ValidationWindow(int64_t k, int32_t* inputs, int32_t* targets) const {
  for (const Block& b : val_) {
    const int64_t w = (b.end - b.begin - 1) / seq_len_;
    if (k < w) {
      const int32_t* src = tokens_.data() + b.begin + k * seq_len_;
      std::copy(src, src + seq_len_, inputs);
      std::copy(src + 1, src + seq_len_ + 1, targets);
      return;
    }
    k -= w;
  }
}

int64_t Corpus::train_tokens() const {
  int64_t n = 0;
  for (const Block& b : train_) n += b.end - b.begin;
  return n;
}

}  // namespace moerun::data
