// MoeLayerCuda: one MoE layer of DeepSeek-V3 (docs/architecture.md §4) on one GPU, forward and
// backward, composed from the CUDA kernels: router GEMM in fp32, sigmoid/softmax scores,
// bias-corrected group-limited top-k, the dispatch plan, the experts' gate/up/down GEMMs as grouped
// cuBLAS calls, SwiGLU, the deterministic combine, and the shared experts. It is the GPU twin of
// model::MoeForward / MoeBackward, including the sequence-wise balance loss
// (shape.seq_aux_alpha) and expert parallelism: with an expert group, the layer holds only
// its share of the routed experts, and rows travel to their experts' owners and back by
// all-to-all over a device communicator, regrouped by local expert in source order exactly as
// the CPU does (so the two agree row for row).
// T is the activation and weight storage type (float or __nv_bfloat16); weight gradients are
// fp32 and accumulated (+=). All pointers are device pointers; the layer owns its activation
// buffers, sized for `max_tokens` at Create. Work goes on `stream` (the cuBLAS handle is bound
// to it). Forward synchronizes to read the experts' row counts on the host (the grouped
// GEMMs' sizes); the GEMMs' pointer arrays go to the device as kernel parameters, with no
// wait. With expert
// parallelism the stream is synchronized before each exchange (3 per forward, 2 per backward),
// and the buffers of received rows grow when a forward receives more than they hold.
// Not thread-safe.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/comm/communicator.h"
#include "worker/model/cuda/fp8_linear.h"
#include "worker/model/ffn_block.h"

namespace moerun::model::cuda {

template <typename T>
struct MoeLayerWeightsCuda {
  const T* router = nullptr;                                // [E, D]
  const float* bias = nullptr;                              // [E] balancing bias (may be null)
  const T *gate = nullptr, *up = nullptr, *down = nullptr;  // [E, H, D], [E, H, D], [E, D, H]
  const T *shared_gate = nullptr, *shared_up = nullptr, *shared_down = nullptr;  // [Hs, D] x2,
                                                                                 // [D, Hs]
  // Elements from one expert's gate (up, down; and their gradients) to the next: 0 for the
  // [E, H, D] tensors above, 3·H·D in the model's per-expert layout (gate, up, down each).
  int64_t expert_stride = 0;
  // fp8: the fp32 masters of the expert and shared weights (same layout), which fp8
  // quantizes as the CPU does; when null, the T copies above are quantized.
  const float *master_gate = nullptr, *master_up = nullptr, *master_down = nullptr;
  const float *master_shared_gate = nullptr, *master_shared_up = nullptr,
              *master_shared_down = nullptr;
};

// Expert parallelism (docs/architecture.md §5) on GPUs: the routed experts are spread over `group`,
// member m holding experts [m·experts_per_rank, (m+1)·experts_per_rank), and the layer's expert
// weights and gradients are those only. `group` takes device pointers
// (worker/comm/device_communicator.h) and outlives the layer. A null group: every expert local.
struct ExpertGroupCuda {
  comm::Communicator* group = nullptr;
  int64_t experts_per_rank = 0;
};

struct MoeLayerGradsCuda {  // fp32, +=; same shapes as the weights
  float* router = nullptr;
  float *gate = nullptr, *up = nullptr, *down = nullptr;
  float *shared_gate = nullptr, *shared_up = nullptr, *shared_down = nullptr;
};

template <typename T>
class MoeLayerCuda {
 public:
  // fp8 (bf16 storage only; not owned, outlives the layer): the routed and shared experts'
  // GEMMs in DeepSeek-V3's fp8 recipe, the experts one after another (CUDA 13.0's cuBLASLt
  // has no grouped fp8 call); the router stays fp32.
  static Result<std::unique_ptr<MoeLayerCuda>> Create(const MoeShape& shape, int64_t max_tokens,
                                                      cudaStream_t stream, cublasHandle_t handle,
                                                      Fp8Linear* fp8 = nullptr,
                                                      ExpertGroupCuda ep = {});
  ~MoeLayerCuda();

  // y [b·s, D] (=) MoE(x) for b sequences of s tokens; keeps what Backward needs.
  Status Forward(const T* x, int64_t b, int64_t s, const MoeLayerWeightsCuda<T>& w, T* y);
  // dx (=); weight gradients (+=); the balance loss's gradient scaled by dloss. x and w as in
  // the last Forward.
  Status Backward(const T* dy, const T* x, int64_t b, int64_t s, const MoeLayerWeightsCuda<T>& w,
                  const MoeLayerGradsCuda& g, double dloss, T* dx);
  // With fp8, b·s must be a multiple of 16 (the shared experts' GEMMs), and the expert and
  // shared weights are quantized at the first Forward after Create or WeightsChanged: once
  // per optimizer step, not once per micro-batch.
  // fp8: the weights changed (an optimizer step); the next Forward quantizes them again.
  void WeightsChanged() { fp8_stale_ = true; }
  // Tokens routed to each expert (all E, not only the local ones) in the last Forward, from
  // this rank's tokens (host memory, [E]).
  const int64_t* expert_counts() const { return host_counts_; }
  // The last Forward's sequence-wise balance loss (0 when seq_aux_alpha is 0).
  double balance_loss() const { return *host_loss_; }

  // The last Forward's choices, for tests: idx [n, K] and gates [n, K].
  const int32_t* idx() const { return idx_; }
  const float* gates() const { return gates_; }

 private:
  MoeLayerCuda() = default;
  Status Allocate();
  // Room for `rows` rows grouped by expert (+16 of fp8 slack) in the expert activations and,
  // with expert parallelism, the exchanged rows; grows (reallocating) only.
  Status ReserveExpertRows(int64_t rows);
  // The local experts' gate, up, SwiGLU and down over `in`: `counts` rows per expert (host),
  // `experts` of them, rows grouped by expert; activations in eg_/eu_/ea_.
  Status ExpertsForward(const T* in, const int64_t* counts, int64_t experts,
                        const MoeLayerWeightsCuda<T>& w, T* out);
  // Their backward: din (=) from dout; weight gradients (+=).
  Status ExpertsBackward(const T* dout, const T* in, const int64_t* counts, int64_t experts,
                         const MoeLayerWeightsCuda<T>& w, const MoeLayerGradsCuda& g, T* din);
  // Expert parallelism: sends buf_'s rows to their experts' owners, runs the local experts on
  // what arrives, and brings the outputs back into eo_; the backward mirrors it (deo_ out,
  // dbuf_ back).
  Status ExchangeForward(const MoeLayerWeightsCuda<T>& w);
  Status ExchangeBackward(const MoeLayerWeightsCuda<T>& w, const MoeLayerGradsCuda& g);
  Status Exchange(const void* send, const std::vector<size_t>& send_bytes, void* recv,
                  const std::vector<size_t>& recv_bytes, const char* what);
  // fp8: quantize this forward's expert and shared weights.
  Status Fp8QuantizeWeights(const MoeLayerWeightsCuda<T>& w);
  // fp8: one projection of every expert with rows, in expert order over rows grouped by
  // expert (an expert's padding rows spill into the next expert's rows, which that expert
  // then writes; the buffers have 16 rows of slack at the end). stride: elements from one
  // expert's weight gradient to the next.
  Status Fp8ExpertsForward(const T* x, const std::vector<Fp8Linear::Weight>& w,
                           const int64_t* counts, T* y);
  Status Fp8ExpertsBackward(const T* dy, const T* x, const std::vector<Fp8Linear::Weight>& w,
                            const int64_t* counts, T* dx, float* dw, int64_t stride,
                            bool accumulate_dx);

  MoeShape shape_;
  ExpertGroupCuda ep_;
  int64_t local_experts_ = 0;  // experts this layer holds (E without an expert group)
  int64_t max_tokens_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  std::vector<void*> owned_;  // every cudaMalloc, freed by the destructor
  // Forward: router, plan, expert activations (rows grouped by expert), shared experts.
  float *logits_ = nullptr, *scores_ = nullptr, *gates_ = nullptr;
  int32_t* idx_ = nullptr;
  int64_t *counts_ = nullptr, *offsets_ = nullptr, *slot_row_ = nullptr;
  int32_t *row_token_ = nullptr, *row_slot_ = nullptr;
  T *buf_ = nullptr, *eo_ = nullptr;  // [N·K + 16, D]: this rank's rows, by global expert
  // Rows grouped by local expert, expert_rows_ + 16 of them (grown by ReserveExpertRows):
  // the experts' gate, up and SwiGLU activations and their gradients.
  int64_t expert_rows_ = 0;
  std::vector<void*> grown_;  // what ReserveExpertRows allocated
  T *eg_ = nullptr, *eu_ = nullptr, *ea_ = nullptr, *deg_ = nullptr, *deu_ = nullptr,
    *dea_ = nullptr;
  // Expert parallelism. rbuf_: rows received, by source member then local expert (later the
  // grouped input gradients); gbuf_: the same grouped by local expert (perm_[i] is the rbuf_
  // row of grouped row i); geo_: the local experts' outputs, grouped (later the output
  // gradients); rout_: outputs (gradients) in rbuf_'s order, to send back.
  T *rbuf_ = nullptr, *gbuf_ = nullptr, *geo_ = nullptr, *rout_ = nullptr;
  int32_t* perm_ = nullptr;
  int64_t* recv_counts_ = nullptr;  // device [members · local experts]
  // The last Forward's exchange (host): bytes per member, rows per local expert, and the
  // grouping permutation that perm_ holds on the device.
  ExpertExchangePlan exchange_;
  T *sg_ = nullptr, *su_ = nullptr, *sa_ = nullptr;
  // Backward scratch.
  float *dscores_ = nullptr, *dgates_ = nullptr;
  T *dlogits_ = nullptr, *deo_ = nullptr, *dbuf_ = nullptr, *dsa_ = nullptr, *dsg_ = nullptr,
    *dsu_ = nullptr;
  float* dlogits_f_ = nullptr;
  void** pointers_ = nullptr;                      // 3·E pointers for the grouped GEMMs
  int64_t* host_counts_ = nullptr;                 // pinned [E]
  double *loss_ = nullptr, *host_loss_ = nullptr;  // device and pinned: the balance loss
  double *row_sum_ = nullptr, *f_ = nullptr, *seq_ = nullptr;  // its scratch
  int64_t last_b_ = 0, last_s_ = 0;
  Fp8Linear* fp8_ = nullptr;
  bool fp8_stale_ = true;  // the fp8 copies below lag the weights
  std::vector<Fp8Linear::Weight> fp8_gate_, fp8_up_, fp8_down_;  // [local experts]
  Fp8Linear::Weight fp8_shared_gate_, fp8_shared_up_, fp8_shared_down_;
};

}  // namespace moerun::model::cuda
