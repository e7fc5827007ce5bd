#include "worker/trainer/train_state.h"

#include <cstring>
#include <unordered_map>

namespace moerun::trainer {

using checkpoint::Entry;

uint64_t ModelFingerprint(const ModelSpec& model) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      h ^= static_cast<const unsigned char*>(p)[i];
      h *= 0x100000001b3ull;
    }
  };
  for (const auto& t : ModelTensors(model)) {
    mix(t.name.data(), t.name.size() + 1);
    mix(t.shape.data(), t.shape.size() * sizeof(int64_t));
  }
  return h;
}

std::vector<Entry> SnapshotState(const model::Parameters<float>& params, const OptimizerState& opt,
                                 int64_t step, uint64_t seed, const ModelSpec& model) {
  std::vector<Entry> out;
  for (const auto& v : StateViews(params, opt, step, seed, model)) {
    out.push_back(v.data ? Entry::F32(v.name, v.shape, static_cast<const float*>(v.data),
                                      int64_t(v.bytes / sizeof(float)))
                         : Entry::I64(v.name, v.scalar));
  }
  return out;
}

std::vector<checkpoint::EntryView> StateViews(const model::Parameters<float>& params,
                                              const OptimizerState& opt, int64_t step,
                                              uint64_t seed, const ModelSpec& model) {
  // The one list of what a checkpoint holds: SnapshotState copies these.
  std::vector<checkpoint::EntryView> out;
  auto f32 = [&](std::string name, const model::ParameterView& v, const float* base) {
    out.push_back({std::move(name), checkpoint::DType::kF32, v.info.shape, base + v.offset,
                   size_t(v.info.numel()) * sizeof(float), 0});
  };
  auto i64 = [&](std::string name, int64_t value) {
    out.push_back({std::move(name), checkpoint::DType::kI64, {}, nullptr, 8, value});
  };
  for (const auto& v : params.views()) {
    f32("param/" + v.info.name, v, params.values().data());
    if (!v.info.trainable()) continue;
    f32("adam_m/" + v.info.name, v, opt.m.data());
    f32("adam_v/" + v.info.name, v, opt.v.data());
  }
  i64("meta/step", step);
  i64("meta/seed", static_cast<int64_t>(seed));
  i64("meta/fingerprint", static_cast<int64_t>(ModelFingerprint(model)));
  for (const ModelShapeField& f : ModelShapeFields(model)) i64("meta/" + f.field, f.value);
  return out;
}

Status RestoreState(const std::vector<Entry>& entries, model::Parameters<float>* params,
                    OptimizerState* opt, int64_t* step, const ModelSpec& model) {
  std::unordered_map<std::string, const Entry*> by_name;
  for (const Entry& e : entries) by_name[e.name] = &e;
  auto meta = [&](const char* name) -> const Entry* {
    auto it = by_name.find(name);
    return it == by_name.end() || it->second->dtype != checkpoint::DType::kI64 ? nullptr
                                                                               : it->second;
  };
  const Entry* fp = meta("meta/fingerprint");
  const Entry* st = meta("meta/step");
  if (fp == nullptr || st == nullptr)
    return Status::Corruption("checkpoint lacks meta/step or meta/fingerprint");
  // The recorded fields first: some models differ with every tensor shape alike (n_heads at
  // the same d_model), which the fingerprint cannot see. The first field that differs names it.
  for (const ModelShapeField& f : ModelShapeFields(model)) {
    const Entry* e = meta(("meta/" + f.field).c_str());
    if (e == nullptr || e->i64() == f.value) continue;
    return Status::InvalidArgument("it is another model's checkpoint: trained with " + f.field +
                                   ": " + ModelShapeText(f.field, e->i64()) + ", but the job has " +
                                   f.field + ": " + ModelShapeText(f.field, f.value));
  }
  if (uint64_t(fp->i64()) != ModelFingerprint(model)) {
    return Status::InvalidArgument(
        "it is another model's checkpoint: its tensor names or shapes differ from the job's");
  }
  auto load = [&](const std::string& name, const model::ParameterView& v, float* dst) -> Status {
    auto it = by_name.find(name);
    if (it == by_name.end()) return Status::Corruption("checkpoint lacks " + name);
    const Entry& e = *it->second;
    if (e.dtype != checkpoint::DType::kF32 || e.shape != v.info.shape) {
      return Status::Corruption("checkpoint entry " + name + " has another type or shape");
    }
    std::memcpy(dst + v.offset, e.bytes.data(), e.bytes.size());
    return Status::OK();
  };
  for (const auto& v : params->views()) {
    MOERUN_RETURN_IF_ERROR(load("param/" + v.info.name, v, params->values().data()));
    if (opt == nullptr || !v.info.trainable()) continue;
    MOERUN_RETURN_IF_ERROR(load("adam_m/" + v.info.name, v, opt->m.data()));
    MOERUN_RETURN_IF_ERROR(load("adam_v/" + v.info.name, v, opt->v.data()));
  }
  *step = st->i64();
  return Status::OK();
}

}  // namespace moerun::trainer
