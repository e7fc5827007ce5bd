#include "worker/model/parameters.h"

#include <cmath>
#include <numbers>
#include <stdexcept>

namespace moerun::model {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

template <typename T>
Parameters<T>::Parameters(std::vector<TensorInfo> tensors) {
  int64_t offset = 0;
  for (auto& t : tensors) {
    const int64_t n = t.numel();
    by_name_[t.name] = views_.size();
    views_.push_back({std::move(t), offset});
    offset += n;
  }
  values_.assign(static_cast<size_t>(offset), T(0));
  grads_.assign(static_cast<size_t>(offset), T(0));
}

template <typename T>
void Parameters<T>::Initialize(uint64_t seed, double init_std) {
  for (const ParameterView& v : views_) {
    T* p = values_.data() + v.offset;
    const int64_t n = v.info.numel();
    if (v.info.role == TensorRole::kRouterBias) {
      for (int64_t i = 0; i < n; ++i) p[i] = T(0);
    } else if (!v.info.is_matrix()) {
      for (int64_t i = 0; i < n; ++i) p[i] = T(1);
    } else {
      uint64_t state = seed ^ HashName(v.info.name);
      for (int64_t i = 0; i < n; i += 2) {  // Box-Muller: two normals per pair of uniforms
        const double u1 = (double(SplitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
        const double u2 = double(SplitMix64(state) >> 11) * 0x1.0p-53;
        const double r = std::sqrt(-2.0 * std::log(u1)) * init_std;
        p[i] = T(r * std::cos(2 * std::numbers::pi * u2));
        if (i + 1 < n) p[i + 1] = T(r * std::sin(2 * std::numbers::pi * u2));
      }
    }
  }
}

template <typename T>
T* Parameters<T>::Find(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : values_.data() + views_[it->second].offset;
}

template <typename T>
T* Parameters<T>::Grad(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : grads_.data() + views_[it->second].offset;
}

template <typename T>
void Parameters<T>::ZeroGrads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template class Parameters<float>;
template class Parameters<double>;

std::vector<TensorRun> TrainableRuns(const std::vector<ParameterView>& views, bool routed_experts) {
  std::vector<TensorRun> runs;
  for (const auto& v : views) {
    if (!v.info.trainable() || (v.info.role == TensorRole::kRoutedExpert) != routed_experts)
      continue;
    if (!runs.empty() && runs.back().offset + runs.back().count == v.offset) {
      runs.back().count += v.info.numel();
    } else {
      runs.push_back({v.offset, v.info.numel()});
    }
  }
  return runs;
}

}  // namespace moerun::model
