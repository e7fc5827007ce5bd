#include "kernels/cpu/dnnl_matmul.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cpu/op_profile.h"

namespace moerun::kernels::cpu {
namespace {

using dt = dnnl::memory::data_type;
constexpr dnnl::memory::dim kRuntime = DNNL_RUNTIME_DIM_VAL;

dt TypeOf(GemmOperands t) { return t == GemmOperands::kF32 ? dt::f32 : dt::bf16; }

// The engine, stream and primitives of this thread.
struct Matmuls {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // (operand type, trans_a, trans_b, beta) -> a matmul with every size and stride at run time.
  std::map<std::tuple<int, bool, bool, float>, std::pair<dnnl::matmul, std::string>> cache;
};

Matmuls& ThisThread() {
  thread_local Matmuls m;
  return m;
}

// A [rows, cols] operand in row-major memory with row stride ld, or its transpose.
dnnl::memory::desc Operand(dt type, bool trans, dnnl::memory::dim rows, dnnl::memory::dim cols,
                           dnnl::memory::dim ld) {
  return dnnl::memory::desc({rows, cols}, type,
                            trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1});
}

// The cached primitive, made on first use; null when oneDNN has none for this CPU (bf16 where
// the CPU lacks even the AVX-512 oneDNN emulates it with).
const std::pair<dnnl::matmul, std::string>* Primitive(GemmOperands type, bool ta, bool tb,
                                                      float beta) {
  Matmuls& m = ThisThread();
  const auto key = std::make_tuple(int(type), ta, tb, beta);
  auto it = m.cache.find(key);
  if (it != m.cache.end()) return &it->second;
  const dt t = TypeOf(type);
  dnnl::primitive_attr attr;
  attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});  // alpha, given at each call
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  const auto desc = dnnl::matmul::desc(Operand(t, ta, kRuntime, kRuntime, kRuntime),
                                       Operand(t, tb, kRuntime, kRuntime, kRuntime),
                                       Operand(dt::f32, false, kRuntime, kRuntime, kRuntime));
  try {
    const auto pd = dnnl::matmul::primitive_desc(desc, attr, m.engine);
    return &m.cache.emplace(key, std::make_pair(dnnl::matmul(pd), std::string(pd.impl_info_str())))
                .first->second;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

}  // namespace

void DnnlGemm(GemmOperands type, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
              const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
              int64_t ldc) {
  ScopedOp profile_op(type == GemmOperands::kF32 ? Op::kGemmF32 : Op::kGemmBf16);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no products: C = beta · C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  Matmuls& mm = ThisThread();
  const auto* found = Primitive(type, ta, tb, beta);
  if (found == nullptr) {
    std::fprintf(stderr, "fatal: oneDNN has no %s matmul on this CPU\n",
                 type == GemmOperands::kF32 ? "fp32" : "bf16");
    std::abort();
  }
  const dnnl::matmul& prim = found->first;
  const dt t = TypeOf(type);
  dnnl::memory am(Operand(t, ta, m, k, lda), mm.engine, const_cast<void*>(a));
  dnnl::memory bm(Operand(t, tb, k, n, ldb), mm.engine, const_cast<void*>(b));
  dnnl::memory cm(Operand(dt::f32, false, m, n, ldc), mm.engine, c);
  float scale = alpha;
  dnnl::memory sm({{1}, dt::f32, {1}}, mm.engine, &scale);
  prim.execute(mm.stream, {{DNNL_ARG_SRC, am},
                           {DNNL_ARG_WEIGHTS, bm},
                           {DNNL_ARG_DST, cm},
                           {DNNL_ARG_ATTR_OUTPUT_SCALES, sm}});
  mm.stream.wait();
}

std::string DnnlKernelInfo() {
  const dnnl_version_t* v = dnnl::version();
  // The instruction sets that matter for these products, best first.
  static constexpr std::pair<dnnl::cpu_isa, const char*> kIsas[] = {
      {dnnl::cpu_isa::avx512_core_amx, "avx512_core_amx"},
      {dnnl::cpu_isa::avx512_core_bf16, "avx512_core_bf16"},
      {dnnl::cpu_isa::avx512_core_vnni, "avx512_core_vnni"},
      {dnnl::cpu_isa::avx512_core, "avx512_core"},
      {dnnl::cpu_isa::avx2, "avx2"}};
  const dnnl::cpu_isa effective = dnnl::get_effective_cpu_isa();
  std::string isa = "other";
  for (const auto& [id, name] : kIsas)
    if (effective == id) isa = name;
  std::string out = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                    std::to_string(v->patch) + ", ISA " + isa;
  for (GemmOperands t : {GemmOperands::kF32, GemmOperands::kBf16}) {
    const auto* p = Primitive(t, false, false, 0.0f);
    out += std::string(t == GemmOperands::kF32 ? ", fp32 " : ", bf16 ") +
           (p != nullptr ? p->second : "unavailable (emulated through fp32)");
  }
  return out;
}

// Decided once: where oneDNN has no bf16 matmul, asking again would throw and catch on every
// linear layer.
bool DnnlHasBf16() {
  static const bool has = Primitive(GemmOperands::kBf16, false, false, 0.0f) != nullptr;
  return has;
}

}  // namespace moerun::kernels::cpu
