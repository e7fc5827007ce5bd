// ExpertExchangePlan: the host-side bookkeeping of one MoE layer's token exchange under expert
// parallelism (docs/architecture.md §5), shared by the CPU layer (worker/model/ffn_block.cc)
// and the GPU one (worker/model/cuda/moe_layer_cuda.cc) so both move and regroup rows alike.
//
// A layer's routed experts are spread over the expert group's P members, member j holding
// experts [j·epr, (j+1)·epr). Every member sends each expert's rows to its owner (dispatch),
// the owner runs its experts and sends the outputs back (combine); the backward pass mirrors
// both with the same byte counts. Received rows arrive source-major — member 0's rows for the
// owner's first local expert, then its rows for the second, ..., then member 1's — and are
// regrouped by local expert, source order inside each, so every local expert runs one GEMM
// per matrix and the result does not depend on arrival order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moerun::model {

struct ExpertExchangePlan {
  // Bytes sent to / received from each member, [P]: dispatch sends send_bytes and receives
  // recv_bytes; combine does the reverse.
  std::vector<size_t> send_bytes, recv_bytes;
  // perm[i]: the received (source-major) row that is row i once grouped by local expert.
  std::vector<int32_t> perm;
  // Rows per local expert after grouping, [epr]; they add up to `received`.
  std::vector<int64_t> local_counts;
  int64_t received = 0;  // rows received in all
};

// `send_counts` [P·epr]: rows this member sends to each expert, in global expert order (which
// is owner-major, so already laid out per destination). `recv_counts` [P·epr]: rows member j
// sends to this member's local expert le, at j·epr + le (what the counts exchange returned).
// `row_bytes`: bytes of one row (d_model values). Fills `plan`, reusing its storage.
void PlanExpertExchange(const int64_t* send_counts, const int64_t* recv_counts, int members,
                        int64_t experts_per_rank, size_t row_bytes, ExpertExchangePlan* plan);

}  // namespace moerun::model
