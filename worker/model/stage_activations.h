// What one micro-batch's forward keeps for its backward, per decoder layer and per
// multi-token prediction module. Internal to ModelStage (model_stage.cc, model_stage_mtp.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model/ffn_block.h"
#include "worker/model/mla_block.h"

namespace moerun::model {

template <typename T>
struct LayerActivations {
  std::vector<T> x;          // layer input [N, D]
  std::vector<T> n1, rstd1;  // input_layernorm output [N, D] and 1/rms [N]
  std::vector<T> q, k, v;    // MHA: projections, q and k after RoPE [N, H·hd]
  std::vector<T> probs;      // MHA: [B, H, S, S]
  std::vector<T> att;        // MHA: attention output before o_proj [N, H·hd]
  MlaActivations<T> mla;     // MLA: everything its backward reads
  std::vector<T> mid;        // x + attention [N, D]
  std::vector<T> n2, rstd2;  // post_attention_layernorm
  std::vector<T> g, u, a;    // dense MLP [N, F]
  MoeActivations<T> moe;
};

// Module k runs on the first S - k positions of each sequence (Nk = B·(S - k) rows).
template <typename T>
struct MtpActivations {
  std::vector<int32_t> ids, targets;  // [Nk]: token i + k (its embedding), token i + k + 1
  std::vector<T> emb, en, en_rstd;    // embedding rows [Nk, D], after enorm, 1/rms
  std::vector<T> h, hn, hn_rstd;      // the previous depth's hidden rows, after hnorm, 1/rms
  std::vector<T> cat;                 // [enorm(emb); hnorm(h)] [Nk, 2D]: eh_proj's input
  std::vector<T> x, out;              // eh_proj's output (the block's input), block output
  LayerActivations<T> block;
  std::vector<T> fnorm, frstd, logits;  // shared_head.norm output, 1/rms; logits [Nk, V]
  double loss = 0;                      // mean cross-entropy over the Nk positions
};

}  // namespace moerun::model
