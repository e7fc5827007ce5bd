// StageBackend: one rank's pipeline stage of the model on one backend, as the StepDriver
// (worker/trainer/step_driver.h) drives it. Two implementations: CpuStage
// (worker/trainer/cpu_stage.h, the CPU kernels' ModelStage) and the GPU's (ModelCuda,
// worker/trainer/gpu_stage.cc). A backend computes; the driver owns the rules — the
// pipeline schedule, what travels between stages and when, which group sums which gradients,
// who counts each parameter in the global norm, the balancing-bias update, the learning rate,
// evaluation rounds — so those rules are written once for every backend.
//
// Buffers handed to the driver (InputFor, Output, OutputGradFor, InputGrad, PackGradients)
// live where the backend computes (host memory on the CPU, device memory on a GPU); the
// driver only passes them to the communicators of groups(), which take memory of that kind.
// Not thread-safe: the driver calls one method at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/optimizer.h"
#include "worker/comm/communicator.h"

namespace moerun::trainer {

// The communicators a backend's buffers travel over; null (or size 1) where there is nothing
// to exchange. All members of a group call the driver in the same order.
struct StageGroups {
  comm::Communicator* stages = nullptr;            // the world: activations between stages
  comm::Communicator* dense_gradients = nullptr;   // the data group
  comm::Communicator* expert_gradients = nullptr;  // the expert replica group
  // The first and the last stage of this replica when the last keeps a copy of the embedding
  // (multi-token prediction over a pipeline): the copies' gradients are summed over it.
  comm::Communicator* embedding = nullptr;
};

// One kind of gradient packed contiguously for one all-reduce (`count` floats at `data`).
struct GradientPack {
  float* data = nullptr;
  size_t count = 0;
};

class StageBackend {
 public:
  virtual ~StageBackend() = default;

  virtual StageGroups groups() const = 0;

  // Sequences every forward runs (a GPU's buffers are sized once), or 0 when a forward may
  // run any number up to a micro-batch, none included (the CPU).
  virtual int64_t fixed_sequences() const = 0;

  // Before a step's first forward: up to `in_flight` micro-batches will have run their
  // forward and not yet their backward.
  virtual Status BeginStep(int64_t in_flight) = 0;
  // Before an evaluation: it replaces any activations kept.
  virtual void BeginEvaluation() = 0;

  // Bytes of the tensor at a stage boundary (activations or their gradient) for `sequences`
  // sequences: sequences × seq_len × d_model values of the backend's compute type.
  virtual size_t BoundaryBytes(int64_t sequences) const = 0;

  // Where micro-batch `micro`'s input from the previous stage is received (not on the first
  // stage). It stays there until that micro-batch's backward.
  virtual Result<void*> InputFor(int64_t micro, int64_t sequences) = 0;
  // Micro-batch `micro`'s forward over `sequences` sequences: `ids` (first stage) and
  // `targets` (last stage) are host tokens, sequences × seq_len; other stages read the input
  // from InputFor(micro). Returns the mean cross-entropy on the last stage, else 0.
  virtual Result<double> Forward(int64_t micro, const int32_t* ids, const int32_t* targets,
                                 int64_t sequences) = 0;
  // The last forward's output, for the next stage (not on the last stage); unchanged until
  // the next Forward.
  virtual const void* Output() const = 0;
  // The last forward's sum of this stage's MoE layers' sequence-wise balance losses.
  virtual double balance_loss() const = 0;
  // The last training forward's mean MTP cross-entropy (last stage with model.mtp.depth > 0;
  // else 0). Evaluation forwards run no MTP module.
  virtual double mtp_loss() const = 0;
  // MoE layers of this stage, and the last forward's tokens per routed expert of its j-th
  // (host memory, routed_experts values, valid until the next Forward).
  virtual int64_t moe_layers() const = 0;
  virtual const int64_t* ExpertCounts(int64_t j) const = 0;
  // Σ over the last forward's first `sequences` sequences of their mean cross-entropy (last
  // stage; the others, if any, were padding).
  virtual Result<double> SequenceLossSum(int64_t sequences) const = 0;

  // Whether micro-batch `micro`'s forward must run again before its backward (the backend
  // keeps fewer activations than micro-batches in flight); the driver then runs it with the
  // same tokens, its input still at InputFor(micro).
  virtual bool NeedsForwardAgain(int64_t micro) const = 0;
  // Where the gradient of micro-batch `micro`'s output is received (not on the last stage).
  virtual Result<void*> OutputGradFor(int64_t micro) = 0;
  // Gradients (+=) of micro-batch `micro` scaled by `dloss`, from the loss (last stage) or
  // from OutputGradFor(micro). Other than on the first stage, InputGrad() then holds the
  // gradient of its input, for the previous stage.
  virtual Status Backward(int64_t micro, double dloss) = 0;
  virtual const void* InputGrad() const = 0;

  // Aux-loss-free balancing: counts[j] holds MoE layer j's tokens per expert over the step
  // (summed over micro-batches and data-parallel replicas).
  virtual Status UpdateBalanceBias(double gamma,
                                   const std::vector<std::vector<int64_t>>& counts) = 0;
  // The trainable gradients of routed experts (or of everything else) in one buffer, and,
  // after the caller summed it, back where they belong.
  virtual Result<GradientPack> PackGradients(bool routed_experts) = 0;
  virtual Status UnpackGradients(bool routed_experts) = 0;
  // The embedding's gradient on a stage holding it (the first stage, or the last stage's copy
  // under multi-token prediction), for the sum over groups().embedding.
  virtual Result<GradientPack> EmbeddingGradient() = 0;
  // Σ of squared trainable gradients: of everything but routed experts when `dense`, of
  // routed experts when `routed`, in tensor order. The last stage's copy of the embedding is
  // left out (the first stage counts it).
  virtual Result<double> GradSquareSum(bool dense, bool routed) = 0;
  // Gradients scaled by `clip` (1: untouched), AdamW on every trainable tensor (weight decay
  // on matrices). Gradients are zero again by the next step's forwards.
  virtual Status ApplyStep(const kernels::cpu::AdamWStep& adam, double clip) = 0;

  // Brings the host's weights and optimizer state (what a checkpoint saves) up to date; a
  // no-op where they are the same memory.
  virtual Status SyncHost() = 0;
  // Where the steps run, for the log ("GPU 0: NVIDIA H200, bf16").
  virtual std::string Describe() const = 0;
  // After a failure: fails the backend's own data-plane calls (communicators it made itself)
  // so nothing waits for peers that are gone. Thread-safe; idempotent.
  virtual void Abort(const std::string& reason) = 0;
};

}  // namespace moerun::trainer
