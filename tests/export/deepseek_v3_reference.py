#!/usr/bin/python3
"""DeepSeek-V3 in plain PyTorch, written from the architecture's published description
(DeepSeek-V2/V3 technical reports, the DeepseekV3 config keys and the layout of the released
checkpoint), to check what `moerun export` writes. It shares no code with moerun.

    deepseek_v3_reference.py --model DIR --text FILE --seq-len T [--max-windows N]

DIR holds config.json and model.safetensors. Windows are those `moerun eval` reads: window k
takes bytes [k*T, k*T + T] of FILE, inputs the first T and targets the last T. Prints one JSON
line: the main model's mean cross-entropy and, with num_nextn_predict_layers > 0, the mean
cross-entropy of the multi-token prediction modules (module k scores positions i < T - k
against token i + k + 1). Runs in float64, so its own rounding is far below the comparison's
tolerance.

The architecture, as implemented here:
  * RMSNorm: w * x / sqrt(mean(x^2) + eps).
  * Multi-head latent attention. Queries: q_b_proj(RMSNorm(q_a_proj(x))) (or q_proj(x) when
    q_lora_rank is null), split per head into a part without position (qk_nope_head_dim) and
    a RoPE part (qk_rope_head_dim). Keys and values: kv_a_proj_with_mqa(x) gives a latent
    (kv_lora_rank) and one RoPE key shared by every head; kv_b_proj(RMSNorm(latent)) gives each
    head's key part without position and its value. RoPE pairs dimensions (2i, 2i+1) of the
    RoPE parts (the released weights' order), frequency theta^(-2i/qk_rope_head_dim). Causal
    softmax with scale 1/sqrt(qk_nope_head_dim + qk_rope_head_dim); o_proj.
  * MoE (layers from first_k_dense_replace on): sigmoid affinities; experts chosen by the
    top-k of affinity + e_score_correction_bias within the topk_group groups whose two best
    biased affinities sum highest; gates are the unbiased affinities of the chosen experts,
    normalised to sum 1 and scaled by routed_scaling_factor; SwiGLU experts
    down(silu(gate(x)) * up(x)); shared experts as one SwiGLU MLP added to every token.
  * Pre-norm residual blocks, final RMSNorm, untied lm_head.
  * Multi-token prediction module k is layer num_hidden_layers + k - 1: eh_proj of the
    concatenation [enorm(embed_tokens(token i + k)), hnorm(h_i)], one decoder block,
    shared_head.norm then shared_head.head. h is the main model's output after its final norm
    for module 1, the previous module's block output after that.
"""
import argparse
import json
import math
import struct

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).to(torch.float64)
    return tensors


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def swiglu(x, w, prefix):
    gate = F.linear(x, w[prefix + "gate_proj.weight"])
    up = F.linear(x, w[prefix + "up_proj.weight"])
    return F.linear(F.silu(gate) * up, w[prefix + "down_proj.weight"])


def rope_pairs(x, positions, theta):
    """Turns each pair (2i, 2i+1) of the last dimension by position * theta^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions[:, None].to(torch.float64) * inv_freq[None, :]  # [T, d/2]
    cos, sin = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def attention(x, w, p, cfg):
    b, t, _ = x.shape
    h = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kr, eps = cfg["kv_lora_rank"], cfg["rms_norm_eps"]
    if cfg.get("q_lora_rank"):
        q = F.linear(x, w[p + "q_a_proj.weight"])
        q = F.linear(rms_norm(q, w[p + "q_a_layernorm.weight"], eps), w[p + "q_b_proj.weight"])
    else:
        q = F.linear(x, w[p + "q_proj.weight"])
    q = q.view(b, t, h, dn + dr).transpose(1, 2)  # [b, h, t, dn + dr]
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    latent = F.linear(x, w[p + "kv_a_proj_with_mqa.weight"])
    c, k_pe = latent[..., :kr], latent[..., kr:]
    kv = F.linear(rms_norm(c, w[p + "kv_a_layernorm.weight"], eps), w[p + "kv_b_proj.weight"])
    kv = kv.view(b, t, h, dn + dv).transpose(1, 2)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    pos = torch.arange(t)
    q_pe = rope_pairs(q_pe, pos, cfg["rope_theta"])
    k_pe = rope_pairs(k_pe, pos, cfg["rope_theta"])[:, None, :, :].expand(b, h, t, dr)
    scores = (q_nope @ k_nope.transpose(-1, -2) + q_pe @ k_pe.transpose(-1, -2)) / math.sqrt(dn + dr)
    causal = torch.ones(t, t, dtype=torch.bool).triu(1)
    probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(b, t, h * dv)
    return F.linear(out, w[p + "o_proj.weight"])


def moe(x, w, p, cfg):
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    e, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    groups, keep = cfg["n_group"], cfg["topk_group"]
    scores = torch.sigmoid(F.linear(x, w[p + "gate.weight"]))
    biased = scores + w[p + "gate.e_score_correction_bias"]
    if groups > 1:
        grouped = biased.view(-1, groups, e // groups)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)
        chosen_groups = group_score.topk(keep, dim=-1).indices
        allowed = torch.zeros(x.shape[0], groups, dtype=torch.bool)
        allowed.scatter_(1, chosen_groups, True)
        allowed = allowed[:, :, None].expand(-1, -1, e // groups).reshape(-1, e)
        biased = biased.masked_fill(~allowed, float("-inf"))
    chosen = biased.topk(k, dim=-1).indices
    gates = scores.gather(1, chosen)
    if cfg.get("norm_topk_prob", True):
        gates = gates / gates.sum(-1, keepdim=True)
    gates = gates * cfg["routed_scaling_factor"]
    out = torch.zeros_like(x)
    for expert in range(e):
        rows, slot = (chosen == expert).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        y = swiglu(x[rows], w, p + "experts.%d." % expert)
        out.index_add_(0, rows, y * gates[rows, slot][:, None])
    if cfg.get("n_shared_experts", 0) > 0:
        out = out + swiglu(x, w, p + "shared_experts.")
    return out.view(shape)


def block(x, w, layer, cfg):
    p = "model.layers.%d." % layer
    eps = cfg["rms_norm_eps"]
    x = x + attention(rms_norm(x, w[p + "input_layernorm.weight"], eps), w, p + "self_attn.", cfg)
    n = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
    if layer < cfg["first_k_dense_replace"]:
        return x + swiglu(n, w, p + "mlp.")
    return x + moe(n, w, p + "mlp.", cfg)


def mean_ce(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--max-windows", type=int, default=64)
    a = ap.parse_args()
    with open(a.model + "/config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "deepseek_v3" and cfg["scoring_func"] == "sigmoid"
    w = load_safetensors(a.model + "/model.safetensors")
    with open(a.text, "rb") as f:
        data = torch.tensor(list(f.read()), dtype=torch.long)
    t = a.seq_len
    windows = min(a.max_windows, (len(data) - 1) // t)
    rows = torch.stack([data[i * t:i * t + t + 1] for i in range(windows)])
    inputs, targets = rows[:, :-1], rows[:, 1:]
    eps = cfg["rms_norm_eps"]
    main_loss, mtp_loss = [], []
    n_layers, depth = cfg["num_hidden_layers"], cfg.get("num_nextn_predict_layers", 0)
    with torch.no_grad():
        for first in range(0, windows, 8):  # batches, like moerun eval
            x_ids, y_ids = inputs[first:first + 8], targets[first:first + 8]
            h = w["model.embed_tokens.weight"][x_ids]
            for layer in range(n_layers):
                h = block(h, w, layer, cfg)
            h = rms_norm(h, w["model.norm.weight"], eps)
            main_loss.append((mean_ce(F.linear(h, w["lm_head.weight"]), y_ids), len(x_ids)))
            prev, module_losses = h, []
            for k in range(1, depth + 1):
                p = "model.layers.%d." % (n_layers + k - 1)
                sk = t - k
                emb = w[p + "embed_tokens.weight"][y_ids[:, k - 1:k - 1 + sk]]
                joined = torch.cat([rms_norm(emb, w[p + "enorm.weight"], eps),
                                    rms_norm(prev[:, :sk], w[p + "hnorm.weight"], eps)], dim=-1)
                out = block(F.linear(joined, w[p + "eh_proj.weight"]), w, n_layers + k - 1, cfg)
                logits = F.linear(rms_norm(out, w[p + "shared_head.norm.weight"], eps),
                                  w[p + "shared_head.head.weight"])
                module_losses.append(mean_ce(logits, y_ids[:, k:k + sk]))
                prev = out
            if depth:
                mtp_loss.append((sum(module_losses) / depth, len(x_ids)))
    result = {"mean_cross_entropy": sum(l * n for l, n in main_loss) / windows,
              "windows": windows}
    if depth:
        result["mtp_cross_entropy"] = sum(l * n for l, n in mtp_loss) / windows
    print(json.dumps(result))


if __name__ == "__main__":
    main()
