#include "worker/checkpoint/checkpoint_reader.h"

#include <algorithm>
#include <filesystem>
#include <set>

namespace moerun::checkpoint {

namespace fs = std::filesystem;

Result<RunCheckpoints> RunCheckpoints::Open(const std::string& dir) {
  return OpenReadable(dir, nullptr);
}

Result<RunCheckpoints> RunCheckpoints::OpenReadable(const std::string& dir,
                                                    std::vector<std::string>* unreadable) {
  std::vector<std::string> shard_dirs;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file() && it->path().filename() == "CURRENT") {
      shard_dirs.push_back(it->path().parent_path().string());
    }
  }
  if (ec) return Status::NotFound("checkpoint directory " + dir + ": " + ec.message());
  if (shard_dirs.empty()) return Status::NotFound("no checkpoint shards under " + dir);
  std::sort(shard_dirs.begin(), shard_dirs.end());
  RunCheckpoints r;
  for (const auto& d : shard_dirs) {
    auto s = ShardStore::Open(d, false);
    if (!s.ok() && unreadable != nullptr) {
      unreadable->push_back(fs::relative(d, dir).string() + ": " + s.status().message());
      continue;
    }
    if (!s.ok()) return s.status();
    r.stores_.push_back(std::move(s.value()));
  }
  return r;
}

Result<std::vector<int64_t>> RunCheckpoints::CompleteSteps() const {
  std::vector<int64_t> common;
  for (size_t i = 0; i < stores_.size(); ++i) {
    auto steps = stores_[i]->CompleteSteps();
    if (!steps.ok()) return steps.status();
    if (i == 0) {
      common = steps.value();
    } else {
      std::vector<int64_t> both;
      std::set_intersection(common.begin(), common.end(), steps->begin(), steps->end(),
                            std::back_inserter(both));
      common.swap(both);
    }
  }
  return common;
}

Result<std::vector<Entry>> RunCheckpoints::ReadStep(int64_t step) const {
  std::vector<Entry> all;
  std::set<std::string> seen;
  for (const auto& s : stores_) {
    auto entries = s->ReadStep(step);
    if (!entries.ok()) return entries.status();
    for (auto& e : entries.value())
      if (seen.insert(e.name).second) all.push_back(std::move(e));
  }
  return all;
}

Result<int64_t> RunCheckpoints::NewestReadableStep(std::vector<std::string>* refused) const {
  auto steps = CompleteSteps();
  if (!steps.ok()) return steps.status();
  for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
    auto entries = ReadStep(*it);
    if (entries.ok()) return *it;
    if (refused)
      refused->push_back("step " + std::to_string(*it) + ": " + entries.status().message());
  }
  return Status::NotFound("no readable checkpoint step");
}

}  // namespace moerun::checkpoint
