#include "worker/model/cuda/moe_layer_cuda.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/moe_dispatch.cuh"
#include "kernels/cuda/router.cuh"

namespace moerun::model::cuda {
namespace {

namespace kc = moerun::kernels::cuda;

// kernels/cuda/cuda_status.h decides each error's code.
Status Cuda(cudaError_t e, const char* what) {
  return kc::CudaStatus(e, std::string("MoE layer on the GPU: ") + what);
}

Status Blas(cublasStatus_t s, const char* what) {
  return kc::CublasStatus(s, std::string("MoE layer on the GPU: ") + what);
}

// *ptr = `count` device values (at least one), recorded in `owner`; once `st` holds an
// error, nothing more is allocated (*ptr null) and the first error stays.
template <typename V>
void AllocInto(V** ptr, int64_t count, std::vector<void*>* owner, Status* st) {
  *ptr = nullptr;
  if (!st->ok()) return;
  void* p = nullptr;
  *st = Cuda(cudaMalloc(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(V)),
             "allocating device memory");
  if (!st->ok()) return;
  owner->push_back(p);
  *ptr = static_cast<V*>(p);
}

}  // namespace

template <typename T>
Result<std::unique_ptr<MoeLayerCuda<T>>> MoeLayerCuda<T>::Create(
    const MoeShape& shape, int64_t max_tokens, cudaStream_t stream, cublasHandle_t handle,
    Fp8Linear* fp8, ExpertGroupCuda ep) {
  if (shape.router.experts <= 0 || shape.router.top_k <= 0 || max_tokens <= 0) {
    return Status::InvalidArgument("MoE layer on the GPU: experts, top_k and max_tokens > 0");
  }
  if (ep.group != nullptr && (ep.experts_per_rank <= 0 ||
                              ep.experts_per_rank * ep.group->size() != shape.router.experts)) {
    return Status::InvalidArgument("MoE layer on the GPU: " + std::to_string(ep.experts_per_rank) +
                                   " experts on each of " + std::to_string(ep.group->size()) +
                                   " members do not make " + std::to_string(shape.router.experts));
  }
  if (fp8 != nullptr && !std::is_same_v<T, __nv_bfloat16>) {
    return Status::InvalidArgument("MoE layer on the GPU: fp8 runs with bf16 storage");
  }
  std::unique_ptr<MoeLayerCuda<T>> layer(new MoeLayerCuda<T>());
  layer->shape_ = shape;
  layer->ep_ = ep;
  layer->local_experts_ = ep.group != nullptr ? ep.experts_per_rank : shape.router.experts;
  layer->max_tokens_ = max_tokens;
  layer->stream_ = stream;
  layer->handle_ = handle;
  layer->fp8_ = fp8;
  MOERUN_RETURN_IF_ERROR(Blas(cublasSetStream(handle, stream), "binding the stream"));
  MOERUN_RETURN_IF_ERROR(layer->Allocate());
  if (fp8 != nullptr) {
    const int64_t d = shape.d_model, h = shape.expert_hidden, hs = shape.shared_hidden;
    auto add = [&](int64_t out, int64_t in, std::vector<Fp8Linear::Weight>* to) -> Status {
      auto w = fp8->NewWeight(out, in);
      if (!w.ok()) return w.status();
      to->push_back(w.value());
      return Status::OK();
    };
    for (int64_t e = 0; e < layer->local_experts_; ++e) {
      MOERUN_RETURN_IF_ERROR(add(h, d, &layer->fp8_gate_));
      MOERUN_RETURN_IF_ERROR(add(h, d, &layer->fp8_up_));
      MOERUN_RETURN_IF_ERROR(add(d, h, &layer->fp8_down_));
    }
    if (hs > 0) {
      std::vector<Fp8Linear::Weight> shared;
      MOERUN_RETURN_IF_ERROR(add(hs, d, &shared));
      MOERUN_RETURN_IF_ERROR(add(hs, d, &shared));
      MOERUN_RETURN_IF_ERROR(add(d, hs, &shared));
      layer->fp8_shared_gate_ = shared[0];
      layer->fp8_shared_up_ = shared[1];
      layer->fp8_shared_down_ = shared[2];
    }
  }
  return Result<std::unique_ptr<MoeLayerCuda<T>>>(std::move(layer));
}

template <typename T>
Status MoeLayerCuda<T>::Fp8QuantizeWeights(const MoeLayerWeightsCuda<T>& w) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const int64_t d = shape_.d_model, h = shape_.expert_hidden;
    const int64_t stride = w.expert_stride > 0 ? w.expert_stride : h * d;
    // From the fp32 master when there is one (the CPU twin's input), else the T copy.
    auto quantize = [&](const float* master, const T* copy, int64_t offset,
                        const Fp8Linear::Weight& dst) {
      return master != nullptr ? fp8_->Quantize(master + offset, dst)
                               : fp8_->Quantize(copy + offset, dst);
    };
    for (size_t e = 0; e < fp8_gate_.size(); ++e) {
      const int64_t o = static_cast<int64_t>(e) * stride;
      MOERUN_RETURN_IF_ERROR(quantize(w.master_gate, w.gate, o, fp8_gate_[e]));
      MOERUN_RETURN_IF_ERROR(quantize(w.master_up, w.up, o, fp8_up_[e]));
      MOERUN_RETURN_IF_ERROR(quantize(w.master_down, w.down, o, fp8_down_[e]));
    }
    if (shape_.shared_hidden > 0) {
      MOERUN_RETURN_IF_ERROR(quantize(w.master_shared_gate, w.shared_gate, 0, fp8_shared_gate_));
      MOERUN_RETURN_IF_ERROR(quantize(w.master_shared_up, w.shared_up, 0, fp8_shared_up_));
      MOERUN_RETURN_IF_ERROR(quantize(w.master_shared_down, w.shared_down, 0, fp8_shared_down_));
    }
    return Status::OK();
  } else {
    (void)w;
    return Status::InvalidArgument("MoE layer on the GPU: fp8 runs with bf16 storage");
  }
}

template <typename T>
Status MoeLayerCuda<T>::Fp8ExpertsForward(const T* x, const std::vector<Fp8Linear::Weight>& w,
                                          const int64_t* counts, T* y) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    int64_t row = 0;
    for (size_t e = 0; e < w.size(); ++e) {
      const int64_t rows = counts[e];
      MOERUN_RETURN_IF_ERROR(fp8_->Forward(x + row * w[e].in, w[e], y + row * w[e].out, rows));
      row += rows;
    }
    return Status::OK();
  } else {
    (void)x, (void)w, (void)counts, (void)y;
    return Status::InvalidArgument("MoE layer on the GPU: fp8 runs with bf16 storage");
  }
}

template <typename T>
Status MoeLayerCuda<T>::Fp8ExpertsBackward(const T* dy, const T* x,
                                           const std::vector<Fp8Linear::Weight>& w,
                                           const int64_t* counts, T* dx, float* dw, int64_t stride,
                                           bool accumulate_dx) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    int64_t row = 0;
    for (size_t e = 0; e < w.size(); ++e) {
      const int64_t rows = counts[e];
      const int64_t o = static_cast<int64_t>(e) * (stride > 0 ? stride : w[e].out * w[e].in);
      MOERUN_RETURN_IF_ERROR(fp8_->Backward(dy + row * w[e].out, x + row * w[e].in, w[e],
                                            dx + row * w[e].in, dw + o, rows, accumulate_dx));
      row += rows;
    }
    return Status::OK();
  } else {
    (void)dy, (void)x, (void)w, (void)counts, (void)dx, (void)dw, (void)stride, (void)accumulate_dx;
    return Status::InvalidArgument("MoE layer on the GPU: fp8 runs with bf16 storage");
  }
}

template <typename T>
MoeLayerCuda<T>::~MoeLayerCuda() {
  for (void* p : owned_) cudaFree(p);
  for (void* p : grown_) cudaFree(p);
  if (host_counts_) cudaFreeHost(host_counts_);
  if (host_loss_) cudaFreeHost(host_loss_);
}

template <typename T>
Status MoeLayerCuda<T>::Allocate() {
  const int64_t n = max_tokens_, e = shape_.router.experts, k = shape_.router.top_k;
  const int64_t d = shape_.d_model, hs = shape_.shared_hidden;
  Status st;
  auto alloc = [&](auto** ptr, int64_t count) { AllocInto(ptr, count, &owned_, &st); };
  alloc(&logits_, n * e);
  alloc(&scores_, n * e);
  alloc(&gates_, n * k);
  alloc(&idx_, n * k);
  alloc(&counts_, e);
  alloc(&offsets_, e + 1);
  alloc(&slot_row_, n * k);
  alloc(&row_token_, n * k);
  alloc(&row_slot_, n * k);
  // Rows grouped by expert, plus 16 rows of slack: fp8 pads each expert's rows to a multiple
  // of 16, and the last expert's padding lands past the end.
  const int64_t rows = n * k + 16;
  alloc(&buf_, rows * d);
  alloc(&eo_, rows * d);
  alloc(&sg_, n * hs);
  alloc(&su_, n * hs);
  alloc(&sa_, n * hs);
  alloc(&dscores_, n * e);
  alloc(&dgates_, n * k);
  alloc(&dlogits_, n * e);
  alloc(&dlogits_f_, n * e);
  alloc(&deo_, rows * d);
  alloc(&dbuf_, rows * d);
  if (ep_.group != nullptr) alloc(&recv_counts_, e);
  alloc(&dsa_, n * hs);
  alloc(&dsg_, n * hs);
  alloc(&dsu_, n * hs);
  alloc(&pointers_, 3 * e);
  alloc(&loss_, 1);
  alloc(&row_sum_, n);
  alloc(&f_, n * e);  // one row of E per sequence: at most n sequences
  alloc(&seq_, n);
  MOERUN_RETURN_IF_ERROR(st);
  MOERUN_RETURN_IF_ERROR(ReserveExpertRows(n * k));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaMallocHost(&host_loss_, sizeof(double)), "pinned loss"));
  *host_loss_ = 0;
  return Cuda(cudaMallocHost(&host_counts_, static_cast<size_t>(e) * sizeof(int64_t)),
              "allocating pinned counts");
}

template <typename T>
Status MoeLayerCuda<T>::ReserveExpertRows(int64_t rows) {
  if (rows <= expert_rows_ && eg_ != nullptr) return Status::OK();
  for (void* p : grown_) cudaFree(p);
  grown_.clear();
  const int64_t cap = std::max(rows, expert_rows_ + expert_rows_ / 4);
  const int64_t slack = cap + 16, d = shape_.d_model, h = shape_.expert_hidden;
  Status st;
  auto alloc = [&](auto** ptr, int64_t count) { AllocInto(ptr, count, &grown_, &st); };
  alloc(&eg_, slack * h);
  alloc(&eu_, slack * h);
  alloc(&ea_, slack * h);
  alloc(&deg_, slack * h);
  alloc(&deu_, slack * h);
  alloc(&dea_, slack * h);
  if (ep_.group != nullptr) {
    alloc(&rbuf_, slack * d);
    alloc(&gbuf_, slack * d);
    alloc(&geo_, slack * d);
    alloc(&rout_, slack * d);
    alloc(&perm_, slack);
  }
  expert_rows_ = st.ok() ? cap : 0;
  return st;
}

template <typename T>
Status MoeLayerCuda<T>::ExpertsForward(const T* in, const int64_t* counts, int64_t experts,
                                       const MoeLayerWeightsCuda<T>& w, T* out) {
  const int64_t d = shape_.d_model, h = shape_.expert_hidden;
  int64_t rows = 0;
  for (int64_t e = 0; e < experts; ++e) rows += counts[e];
  if (fp8_) {
    MOERUN_RETURN_IF_ERROR(Fp8ExpertsForward(in, fp8_gate_, counts, eg_));
    MOERUN_RETURN_IF_ERROR(Fp8ExpertsForward(in, fp8_up_, counts, eu_));
  } else {
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::ExpertLinearForward<T>(handle_, in, w.gate, eg_, counts, experts, d, h, pointers_,
                                        w.expert_stride),
             "expert gate GEMM"));
    MOERUN_RETURN_IF_ERROR(Blas(kc::ExpertLinearForward<T>(handle_, in, w.up, eu_, counts, experts,
                                                           d, h, pointers_, w.expert_stride),
                                "expert up GEMM"));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchSwiGluForward<T>(eg_, eu_, ea_, rows * h, stream_), "expert SwiGLU"));
  if (fp8_) return Fp8ExpertsForward(ea_, fp8_down_, counts, out);
  return Blas(kc::ExpertLinearForward<T>(handle_, ea_, w.down, out, counts, experts, h, d,
                                         pointers_, w.expert_stride),
              "expert down GEMM");
}

template <typename T>
Status MoeLayerCuda<T>::ExpertsBackward(const T* dout, const T* in, const int64_t* counts,
                                        int64_t experts, const MoeLayerWeightsCuda<T>& w,
                                        const MoeLayerGradsCuda& g, T* din) {
  const int64_t d = shape_.d_model, h = shape_.expert_hidden;
  int64_t rows = 0;
  for (int64_t e = 0; e < experts; ++e) rows += counts[e];
  // Down, then SwiGLU, then gate and up (both feed din).
  if (fp8_) {
    MOERUN_RETURN_IF_ERROR(
        Fp8ExpertsBackward(dout, ea_, fp8_down_, counts, dea_, g.down, w.expert_stride, false));
  } else {
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::ExpertLinearBackward<T>(handle_, dout, ea_, w.down, dea_, g.down, counts, experts,
                                         h, d, pointers_, false, w.expert_stride),
             "expert down backward"));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchSwiGluBackward<T>(dea_, eg_, eu_, deg_, deu_, rows * h, stream_),
           "expert SwiGLU backward"));
  if (fp8_) {
    MOERUN_RETURN_IF_ERROR(
        Fp8ExpertsBackward(deg_, in, fp8_gate_, counts, din, g.gate, w.expert_stride, false));
    return Fp8ExpertsBackward(deu_, in, fp8_up_, counts, din, g.up, w.expert_stride, true);
  }
  MOERUN_RETURN_IF_ERROR(
      Blas(kc::ExpertLinearBackward<T>(handle_, deg_, in, w.gate, din, g.gate, counts, experts, d,
                                       h, pointers_, false, w.expert_stride),
           "expert gate backward"));
  return Blas(kc::ExpertLinearBackward<T>(handle_, deu_, in, w.up, din, g.up, counts, experts, d, h,
                                          pointers_, true, w.expert_stride),
              "expert up backward");
}

template <typename T>
Status MoeLayerCuda<T>::Exchange(const void* send, const std::vector<size_t>& send_bytes,
                                 void* recv, const std::vector<size_t>& recv_bytes,
                                 const char* what) {
  // The communicator has its own stream (or none): what it sends must be written first.
  MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), what));
  Status st = ep_.group->AllToAllV(send, send_bytes, recv, recv_bytes);
  if (!st.ok()) return st.WithContext(std::string("expert ") + what);
  return Status::OK();
}

template <typename T>
Status MoeLayerCuda<T>::ExchangeForward(const MoeLayerWeightsCuda<T>& w) {
  const int64_t d = shape_.d_model, epr = ep_.experts_per_rank;
  const int p = ep_.group->size();
  // 1. How many rows each member sends each of our experts: counts_ is in global expert
  //    order, which is owner-major, so it is already laid out per destination.
  std::vector<size_t> count_bytes(static_cast<size_t>(p), size_t(epr) * sizeof(int64_t));
  MOERUN_RETURN_IF_ERROR(Exchange(counts_, count_bytes, recv_counts_, count_bytes, "counts"));
  std::vector<int64_t> recv_counts(static_cast<size_t>(p * epr));
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpy(recv_counts.data(), recv_counts_, recv_counts.size() * sizeof(int64_t),
                      cudaMemcpyDeviceToHost),
           "reading received counts"));
  // 2. The rows themselves, 3. grouped by local expert, source order inside each: the CPU's
  //    order (worker/model/expert_exchange_plan.h).
  PlanExpertExchange(host_counts_, recv_counts.data(), p, epr, size_t(d) * sizeof(T), &exchange_);
  const int64_t received = exchange_.received;
  MOERUN_RETURN_IF_ERROR(ReserveExpertRows(received));
  MOERUN_RETURN_IF_ERROR(
      Exchange(buf_, exchange_.send_bytes, rbuf_, exchange_.recv_bytes, "dispatch"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(perm_, exchange_.perm.data(), exchange_.perm.size() * sizeof(int32_t),
                           cudaMemcpyHostToDevice, stream_),
           "permutation"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchGatherRows<T>(rbuf_, perm_, gbuf_, received, d, stream_), "grouping rows"));
  // 4. Our experts, 5. their outputs back to where their rows came from.
  MOERUN_RETURN_IF_ERROR(ExpertsForward(gbuf_, exchange_.local_counts.data(), epr, w, geo_));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchScatterRows<T>(geo_, perm_, rout_, received, d, stream_), "ungrouping"));
  return Exchange(rout_, exchange_.recv_bytes, eo_, exchange_.send_bytes, "combine");
}

template <typename T>
Status MoeLayerCuda<T>::ExchangeBackward(const MoeLayerWeightsCuda<T>& w,
                                         const MoeLayerGradsCuda& g) {
  const int64_t d = shape_.d_model, epr = ep_.experts_per_rank;
  // Output gradients to the experts (rout_), grouped (geo_, the outputs no longer needed).
  const auto& x = exchange_;
  MOERUN_RETURN_IF_ERROR(Exchange(deo_, x.send_bytes, rout_, x.recv_bytes, "combine backward"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchGatherRows<T>(rout_, perm_, geo_, x.received, d, stream_), "grouping"));
  // Input gradients into rbuf_ (the received rows are no longer needed), then home.
  MOERUN_RETURN_IF_ERROR(ExpertsBackward(geo_, gbuf_, x.local_counts.data(), epr, w, g, rbuf_));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchScatterRows<T>(rbuf_, perm_, rout_, x.received, d, stream_), "ungrouping"));
  return Exchange(rout_, x.recv_bytes, dbuf_, x.send_bytes, "dispatch backward");
}

template <typename T>
Status MoeLayerCuda<T>::Forward(const T* x, int64_t b, int64_t s, const MoeLayerWeightsCuda<T>& w,
                                T* y) {
  const int64_t n = b * s;
  if (b < 0 || s < 0 || n > max_tokens_) {
    return Status::InvalidArgument("MoE layer on the GPU: " + std::to_string(n) +
                                   " tokens, sized for " + std::to_string(max_tokens_));
  }
  if (fp8_ != nullptr && n % 16 != 0) {
    return Status::InvalidArgument("MoE layer on the GPU: fp8 needs a multiple of 16 tokens, not " +
                                   std::to_string(n));
  }
  const auto& r = shape_.router;
  const int64_t e = r.experts, k = r.top_k, d = shape_.d_model, hs = shape_.shared_hidden;
  last_b_ = b;
  last_s_ = s;
  // Router: fp32 logits, scores, top-k.
  MOERUN_RETURN_IF_ERROR(
      Blas(kc::GemmNTToFloat<T>(handle_, n, e, d, x, w.router, logits_), "router GEMM"));
  MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchRouterScores(logits_, scores_, n, r, stream_), "scores"));
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRouterSelect(scores_, w.bias, idx_, gates_, n, r, stream_), "top-k"));
  // Dispatch: rows grouped by expert, counts to the host for the grouped GEMMs.
  const kc::DeviceDispatchPlan plan{n, k, e, counts_, offsets_, row_token_, row_slot_, slot_row_};
  MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchPlanDispatch(idx_, plan, stream_), "dispatch plan"));
  if (shape_.seq_aux_alpha > 0) {  // as the CPU layer
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchSeqBalanceLoss(scores_, idx_, b, s, shape_.seq_aux_alpha, r, nullptr, 0.0,
                                      loss_, {row_sum_, f_, seq_}, stream_),
             "balance loss"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(host_loss_, loss_, sizeof(double), cudaMemcpyDeviceToHost, stream_),
             "reading the balance loss"));
  } else {
    *host_loss_ = 0;
  }
  MOERUN_RETURN_IF_ERROR(Cuda(
      cudaMemcpyAsync(host_counts_, counts_, e * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_),
      "reading expert counts"));
  MOERUN_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream_), "reading expert counts"));
  MOERUN_RETURN_IF_ERROR(Cuda(kc::LaunchDispatchRows<T>(x, plan, buf_, d, stream_), "dispatch"));
  // Experts: gate and up, SwiGLU, down; here, or on their owners.
  if (fp8_ && fp8_stale_) {
    MOERUN_RETURN_IF_ERROR(Fp8QuantizeWeights(w));
    fp8_stale_ = false;
  }
  if (ep_.group != nullptr) {
    MOERUN_RETURN_IF_ERROR(ExchangeForward(w));
  } else {
    MOERUN_RETURN_IF_ERROR(ExpertsForward(buf_, host_counts_, e, w, eo_));
  }
  // Shared experts write y; the routed experts' weighted sum is added in slot order.
  if (hs > 0 && fp8_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      MOERUN_RETURN_IF_ERROR(fp8_->Forward(x, fp8_shared_gate_, sg_, n));
      MOERUN_RETURN_IF_ERROR(fp8_->Forward(x, fp8_shared_up_, su_, n));
      MOERUN_RETURN_IF_ERROR(
          Cuda(kc::LaunchSwiGluForward<T>(sg_, su_, sa_, n * hs, stream_), "shared SwiGLU"));
      MOERUN_RETURN_IF_ERROR(fp8_->Forward(sa_, fp8_shared_down_, y, n));
    }
  } else if (hs > 0) {
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearForward<T>(handle_, x, w.shared_gate, sg_, n, d, hs), "shared gate"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearForward<T>(handle_, x, w.shared_up, su_, n, d, hs), "shared up"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchSwiGluForward<T>(sg_, su_, sa_, n * hs, stream_), "shared SwiGLU"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearForward<T>(handle_, sa_, w.shared_down, y, n, hs, d), "shared down"));
  } else {
    MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(y, 0, n * d * sizeof(T), stream_), "zero y"));
  }
  return Cuda(kc::LaunchCombine<T>(eo_, gates_, plan, y, d, stream_), "combine");
}

template <typename T>
Status MoeLayerCuda<T>::Backward(const T* dy, const T* x, int64_t b, int64_t s,
                                 const MoeLayerWeightsCuda<T>& w, const MoeLayerGradsCuda& g,
                                 double dloss, T* dx) {
  if (b != last_b_ || s != last_s_) {
    return Status::InvalidArgument("MoE layer on the GPU: Backward for " + std::to_string(b) + "x" +
                                   std::to_string(s) + " tokens after a Forward of " +
                                   std::to_string(last_b_) + "x" + std::to_string(last_s_));
  }
  const int64_t n = b * s;
  const auto& r = shape_.router;
  const int64_t e = r.experts, k = r.top_k, d = shape_.d_model, hs = shape_.shared_hidden;
  const kc::DeviceDispatchPlan plan{n, k, e, counts_, offsets_, row_token_, row_slot_, slot_row_};
  // Combine: each routed row's gradient and each gate's.
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchCombineBackward<T>(dy, eo_, gates_, plan, deo_, dgates_, d, stream_), "combine"));
  // Experts, here or on their owners: dbuf from deo.
  if (ep_.group != nullptr) {
    MOERUN_RETURN_IF_ERROR(ExchangeBackward(w, g));
  } else {
    MOERUN_RETURN_IF_ERROR(ExpertsBackward(deo_, buf_, host_counts_, e, w, g, dbuf_));
  }
  // dx: the shared experts' path writes it, the routed rows and the router add to it.
  if (hs > 0 && fp8_) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      MOERUN_RETURN_IF_ERROR(
          fp8_->Backward(dy, sa_, fp8_shared_down_, dsa_, g.shared_down, n, false));
      MOERUN_RETURN_IF_ERROR(
          Cuda(kc::LaunchSwiGluBackward<T>(dsa_, sg_, su_, dsg_, dsu_, n * hs, stream_),
               "shared SwiGLU backward"));
      MOERUN_RETURN_IF_ERROR(
          fp8_->Backward(dsg_, x, fp8_shared_gate_, dx, g.shared_gate, n, false));
      MOERUN_RETURN_IF_ERROR(fp8_->Backward(dsu_, x, fp8_shared_up_, dx, g.shared_up, n, true));
    }
  } else if (hs > 0) {
    MOERUN_RETURN_IF_ERROR(Blas(kc::LinearBackward<T>(handle_, dy, sa_, w.shared_down, dsa_,
                                                      g.shared_down, n, hs, d, false),
                                "shared down backward"));
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchSwiGluBackward<T>(dsa_, sg_, su_, dsg_, dsu_, n * hs, stream_),
             "shared SwiGLU backward"));
    MOERUN_RETURN_IF_ERROR(Blas(
        kc::LinearBackward<T>(handle_, dsg_, x, w.shared_gate, dx, g.shared_gate, n, d, hs, false),
        "shared gate backward"));
    MOERUN_RETURN_IF_ERROR(
        Blas(kc::LinearBackward<T>(handle_, dsu_, x, w.shared_up, dx, g.shared_up, n, d, hs, true),
             "shared up backward"));
  } else {
    MOERUN_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(dx, 0, n * d * sizeof(T), stream_), "zero dx"));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchDispatchRowsBackward<T>(dbuf_, plan, dx, d, stream_), "dispatch backward"));
  // Router: through the gates to the scores, the logits, then the fp32 router GEMM.
  MOERUN_RETURN_IF_ERROR(
      Cuda(cudaMemsetAsync(dscores_, 0, n * e * sizeof(float), stream_), "zero dscores"));
  MOERUN_RETURN_IF_ERROR(Cuda(
      kc::LaunchRouterGatesBackward(dgates_, scores_, idx_, dscores_, n, r, stream_), "gates"));
  if (shape_.seq_aux_alpha > 0) {  // as the CPU layer
    MOERUN_RETURN_IF_ERROR(
        Cuda(kc::LaunchSeqBalanceLoss(scores_, idx_, b, s, shape_.seq_aux_alpha, r, dscores_, dloss,
                                      loss_, {row_sum_, f_, seq_}, stream_),
             "balance loss backward"));
  }
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchRouterScoresBackward(dscores_, scores_, dlogits_f_, n, r, stream_), "scores"));
  // In bf16 the router's input gradient goes through a bf16 GEMM (one type for both inputs);
  // its weight gradient is accumulated in fp32 but from bf16-rounded logit gradients.
  MOERUN_RETURN_IF_ERROR(
      Cuda(kc::LaunchCastFromFloat<T>(dlogits_f_, dlogits_, n * e, stream_), "cast dlogits"));
  MOERUN_RETURN_IF_ERROR(
      Blas(kc::LinearBackward<T>(handle_, dlogits_, x, w.router, dx, g.router, n, d, e, true),
           "router backward"));
  return Cuda(cudaStreamSynchronize(stream_), "backward");
}

template class MoeLayerCuda<float>;
template class MoeLayerCuda<__nv_bfloat16>;

}  // namespace moerun::model::cuda
