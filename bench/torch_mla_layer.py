#!/usr/bin/python3
"""The MLA layer of `moerun-bench mla`, written plainly in PyTorch for comparison.

Same math as moerun's attention half of a decoder layer with `attention: mla`
(DeepSeek-V2/V3): input RMSNorm; q_a_proj, RMSNorm, q_b_proj (or one q_proj with
--q-lora 0); kv_a_proj_with_mqa, RMSNorm of the latent, kv_b_proj; interleaved RoPE on the
rope parts of q and of the one shared key head; causal softmax attention with scale
1/sqrt(nope + rope); o_proj; the residual. Forward + backward against a fixed output
gradient. Prints one JSON line with the same keys as moerun-bench. Needs Debian's
python3-torch (run with /usr/bin/python3).
"""
import argparse
import json
import statistics
import time

import torch


def rms_norm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_interleaved(x, cos, sin):
    # x [..., T, d]: pairs (2i, 2i+1) turn by pos * theta^(-2i/d).
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--q-lora", type=int, default=384)
    p.add_argument("--kv-lora", type=int, default=128)
    p.add_argument("--nope", type=int, default=64)
    p.add_argument("--rope", type=int, default=32)
    p.add_argument("--v", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T, S, D, H = a.tokens, a.seq, a.d_model, a.heads
    B = T // S
    dn, dr, dv, qr, kr = a.nope, a.rope, a.v, a.q_lora, a.kv_lora

    def param(*shape, std=0.02):
        return (torch.randn(*shape) * std).requires_grad_()

    w_norm = torch.ones(D, requires_grad=True)
    if qr > 0:
        w_qa, w_qa_norm, w_qb = param(qr, D), torch.ones(qr, requires_grad=True), param(H * (dn + dr), qr)
    else:
        w_q = param(H * (dn + dr), D)
    w_kva = param(kr + dr, D)
    w_kv_norm = torch.ones(kr, requires_grad=True)
    w_kvb = param(H * (dn + dv), kr)
    w_o = param(D, H * dv)
    x = torch.randn(B, S, D).requires_grad_()
    dout = torch.randn(B, S, D)

    pos = torch.arange(S, dtype=torch.float64)
    inv_freq = 10000.0 ** (-torch.arange(0, dr, 2, dtype=torch.float64) / dr)
    angles = torch.outer(pos, inv_freq)
    cos, sin = angles.cos().float(), angles.sin().float()
    mask = torch.full((S, S), float("-inf")).triu(1)
    scale = (dn + dr) ** -0.5

    def layer():
        n = rms_norm(x, w_norm)
        if qr > 0:
            q = rms_norm(n @ w_qa.t(), w_qa_norm) @ w_qb.t()
        else:
            q = n @ w_q.t()
        q = q.view(B, S, H, dn + dr).transpose(1, 2)  # [B, H, S, dn+dr]
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        kva = n @ w_kva.t()
        c_kv, k_pe = kva.split([kr, dr], dim=-1)
        kv = (rms_norm(c_kv, w_kv_norm) @ w_kvb.t()).view(B, S, H, dn + dv).transpose(1, 2)
        k_nope, v = kv.split([dn, dv], dim=-1)
        q_pe = rope_interleaved(q_pe, cos, sin)
        k_pe = rope_interleaved(k_pe.unsqueeze(1), cos, sin).expand(B, H, S, dr)
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe], dim=-1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale + mask
        att = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, H, S, dv]
        att = att.transpose(1, 2).reshape(B, S, H * dv)
        return x + att @ w_o.t()

    def step():
        out = layer()
        out.backward(dout)

    step()  # warm-up
    times = []
    for _ in range(a.reps):
        s = time.perf_counter()
        step()
        times.append(time.perf_counter() - s)
    t = statistics.median(times)
    print(json.dumps({
        "bench": "mla", "impl": "pytorch", "torch": torch.__version__, "tokens": T, "seq": S,
        "d_model": D, "heads": H, "q_lora": qr, "kv_lora": kr, "nope": dn, "rope": dr, "v": dv,
        "threads": a.threads, "median_s": round(t, 6), "tokens_per_s": round(T / t, 1),
    }))


if __name__ == "__main__":
    main()
