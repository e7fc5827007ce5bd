// Parameters of (a stage of) the model in one flat buffer, with a gradient buffer of the same
// layout. Tensors keep their Hugging Face names and the order of ModelTensors(), so
// checkpoints, digests and export walk the same list. Not thread-safe; owned by one trainer.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/model_tensors.h"

namespace moerun::model {

struct ParameterView {
  TensorInfo info;
  int64_t offset = 0;  // into values()/grads()
};

template <typename T>
class Parameters {
 public:
  // Holds `tensors` (any subset of ModelTensors, e.g. one pipeline stage's).
  explicit Parameters(std::vector<TensorInfo> tensors);

  // Normal(0, init_std) for matrices, 1 for norm scales, 0 for balancing biases. Each
  // tensor's values depend only on (seed, tensor name), so any split of the model into
  // stages or expert shards initializes every tensor identically.
  void Initialize(uint64_t seed, double init_std);

  T* Find(const std::string& name);  // null when not held
  T* Grad(const std::string& name);
  const std::vector<ParameterView>& views() const { return views_; }
  std::vector<T>& values() { return values_; }
  const std::vector<T>& values() const { return values_; }
  std::vector<T>& grads() { return grads_; }
  const std::vector<T>& grads() const { return grads_; }
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  void ZeroGrads();

 private:
  std::vector<ParameterView> views_;
  std::unordered_map<std::string, size_t> by_name_;
  std::vector<T> values_, grads_;
};

// A run of adjacent trainable tensors in the flat buffer, all routed experts or all not:
// expert parallelism sums the two kinds over different groups and counts them in the norm
// from different replicas. Runs are in buffer order; a layer's experts make one run.
struct TensorRun {
  int64_t offset = 0, count = 0;
  bool operator==(const TensorRun&) const = default;
};
std::vector<TensorRun> TrainableRuns(const std::vector<ParameterView>& views, bool routed_experts);

// splitmix64: the deterministic generator behind initialization and data sampling.
uint64_t SplitMix64(uint64_t& state);
// FNV-1a of a string, to derive per-tensor streams.
uint64_t HashName(const std::string& s);

}  // namespace moerun::model
