#!/usr/bin/python3
"""The MoE layer of `moerun-bench moe-layer`, written plainly in PyTorch for comparison.

Same math: sigmoid router with bias-corrected top-k and normalized gates, tokens sorted by
expert, a loop over experts (SwiGLU MLPs), weighted combine, one fused shared-expert MLP,
forward + backward. Prints one JSON line with the same keys as moerun-bench. Needs Debian's
python3-torch (run with /usr/bin/python3).

--precision bf16 runs the step under PyTorch's CPU autocast to bfloat16 (its GEMMs in bf16 on
oneDNN, fp32 master weights), the field's usual way to train in bf16 on a CPU. PyTorch 1.13 has
no fp8 type: --precision fp8 is refused.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--expert-hidden", type=int, default=256)
    p.add_argument("--shared", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T, D, E, K, H, S = a.tokens, a.d_model, a.experts, a.top_k, a.expert_hidden, a.shared

    def param(*shape):
        return (torch.randn(*shape) * 0.02).requires_grad_()

    router = param(E, D)
    bias = torch.zeros(E)
    # One weight set per expert, as nn.ModuleList experts hold them (Hugging Face's
    # DeepseekV3MoE); slicing one stacked tensor would cost a full-size gradient per slice.
    wg = [param(H, D) for _ in range(E)]
    wu = [param(H, D) for _ in range(E)]
    wd = [param(D, H) for _ in range(E)]
    sg, su, sd = param(H * S, D), param(H * S, D), param(D, H * S)
    x = torch.randn(T, D, requires_grad=True)
    dy = torch.randn(T, D)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            y = layer()
        y.float().backward(dy)

    def layer():
        scores = torch.sigmoid(x @ router.t())
        idx = torch.topk(scores + bias, K, dim=-1).indices  # [T, K]
        gates = scores.gather(1, idx)
        gates = gates / gates.sum(-1, keepdim=True)
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token_of = order // K
        counts = torch.bincount(flat, minlength=E).tolist()
        xs = x[token_of]
        outs = []
        for e, rows in enumerate(xs.split(counts)):
            h = F.silu(rows @ wg[e].t()) * (rows @ wu[e].t())
            outs.append(h @ wd[e].t())
        out = torch.cat(outs)
        weighted = out * gates.reshape(-1)[order].unsqueeze(1)
        y = torch.zeros_like(weighted[:T]).index_add(0, token_of, weighted)
        return y + (F.silu(x @ sg.t()) * (x @ su.t())) @ sd.t()

    step()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    flops = 18.0 * T * D * (K * H + H * S) + 6.0 * T * D * E
    print(json.dumps({"bench": "moe-layer", "impl": "pytorch", "torch": torch.__version__,
                      "tokens": T, "d_model": D, "experts": E, "top_k": K, "expert_hidden": H,
                      "shared": S, "threads": a.threads, "precision": a.precision, "median_s": s, "tokens_per_s": T / s,
                      "gflops": flops / s / 1e9}))


if __name__ == "__main__":
    main()
