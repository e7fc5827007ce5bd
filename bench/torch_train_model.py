#!/usr/bin/python3
"""The model of a moerun job spec (MHA + MoE, mla/mtp not covered), trained eagerly in PyTorch
for a speed comparison with `moerun train` at world 1 (bench/compare_train.sh).

Same model and step: byte embedding; pre-norm decoder layers (RMSNorm, multi-head attention
with rotate-half RoPE and a causal softmax, RMSNorm, SwiGLU MLP for the first dense_layers,
then MoE: sigmoid or softmax router, top-k of affinity + balancing bias, gates normalized and
scaled, a loop over SwiGLU experts, one fused shared-expert MLP, the sequence-wise balance
loss); final RMSNorm, untied LM head, mean cross-entropy; AdamW (decoupled weight decay on
matrices only), global-norm clipping, the aux-loss-free bias update; global_batch sequences
of seq_len bytes per step from the job's text data. One thread unless told otherwise.

--precision bf16 runs forward and backward under PyTorch's CPU autocast to bfloat16 (fp32
master weights and optimizer), the field's usual bf16 recipe on a CPU.

Prints one JSON line: tokens/s over the steps after --warmup, and the last loss.
"""
import argparse
import glob
import json
import math
import os
import time

import torch
import torch.nn.functional as F
import yaml


def rms_norm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):  # x [B, H, T, hd], rotate-half convention
    t, hd = x.shape[2], x.shape[3]
    inv = theta ** (-torch.arange(0, hd // 2, dtype=torch.float32) * 2 / hd)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Model(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        d, std = m["d_model"], m.get("init_std", 0.02)
        moe = m.get("moe", {})
        self.m, self.moe = m, moe
        self.dense = m.get("dense_layers", 1)

        def mat(*shape):
            return torch.nn.Parameter(torch.randn(*shape) * std)

        def ones(n):
            return torch.nn.Parameter(torch.ones(n))

        self.embed = mat(m["vocab_size"], d)
        self.layers = torch.nn.ModuleList()
        for li in range(m["n_layers"]):
            L = torch.nn.ParameterDict({"n1": ones(d), "n2": ones(d), "wq": mat(d, d),
                                        "wk": mat(d, d), "wv": mat(d, d), "wo": mat(d, d)})
            if li < self.dense:
                h = m["ffn_hidden"]
                L.update({"g": mat(h, d), "u": mat(h, d), "dn": mat(d, h)})
            else:
                e, h = moe["routed_experts"], moe["expert_hidden"]
                hs = h * moe.get("shared_experts", 1)
                L.update({"router": mat(e, d)})
                for x in range(e):
                    L.update({f"g{x}": mat(h, d), f"u{x}": mat(h, d), f"d{x}": mat(d, h)})
                if hs > 0:
                    L.update({"sg": mat(hs, d), "su": mat(hs, d), "sd": mat(d, hs)})
            self.layers.append(L)
        self.biases = [torch.zeros(moe.get("routed_experts", 1)) for _ in range(m["n_layers"])]
        self.norm = ones(d)
        self.head = mat(m["vocab_size"], d)

    def mlp(self, x, g, u, dn):
        return (F.silu(x @ g.t()) * (x @ u.t())) @ dn.t()

    def moe_layer(self, x, L, li):
        B, T, D = x.shape
        moe = self.moe
        E, K = moe["routed_experts"], moe["top_k"]
        flat_x = x.reshape(-1, D)
        logits = (flat_x @ L["router"].t()).float()
        scores = torch.sigmoid(logits) if moe.get("score_func", "sigmoid") == "sigmoid" \
            else torch.softmax(logits, -1)
        idx = torch.topk(scores + self.biases[li], K, dim=-1).indices
        gates = scores.gather(1, idx)
        gates = gates / gates.sum(-1, keepdim=True) * moe.get("route_scale", 1.0)
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token_of = order // K
        counts = torch.bincount(flat, minlength=E)
        self.counts[li] = counts
        xs = flat_x[token_of]
        outs = [self.mlp(rows, L[f"g{e}"], L[f"u{e}"], L[f"d{e}"])
                for e, rows in enumerate(xs.split(counts.tolist()))]
        out = torch.cat(outs)
        weighted = out * gates.reshape(-1)[order].unsqueeze(1).to(out.dtype)
        y = torch.zeros_like(weighted[: flat_x.shape[0]]).index_add(0, token_of, weighted)
        if "sg" in L:
            y = y + self.mlp(flat_x, L["sg"], L["su"], L["sd"])
        alpha = moe.get("balance", {}).get("seq_aux_alpha", 1e-4)
        aux = 0.0
        if alpha > 0:  # sequence-wise balance loss
            f = F.one_hot(idx.reshape(B, T * K), E).sum(1).float() * E / (K * T)
            p = (scores / scores.sum(-1, keepdim=True)).reshape(B, T, E).mean(1)
            aux = alpha * (f * p).sum(-1).mean()
        return y.reshape(B, T, D), aux

    def forward(self, ids, targets):
        m = self.m
        B, T = ids.shape
        H = m["n_heads"]
        x = self.embed[ids]
        mask = torch.full((T, T), float("-inf")).triu(1)
        aux_total = 0.0
        self.counts = {}
        for li, L in enumerate(self.layers):
            h = rms_norm(x, L["n1"])
            q, k, v = (t.reshape(B, T, H, -1).transpose(1, 2)
                       for t in (h @ L["wq"].t(), h @ L["wk"].t(), h @ L["wv"].t()))
            q, k = rope(q, m.get("rope_theta", 10000.0)), rope(k, m.get("rope_theta", 10000.0))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask.to(q.dtype)
            o = (torch.softmax(att.float(), -1).to(v.dtype) @ v).transpose(1, 2).reshape(B, T, -1)
            x = x + o @ L["wo"].t()
            h = rms_norm(x, L["n2"])
            if li < self.dense:
                x = x + self.mlp(h, L["g"], L["u"], L["dn"])
            else:
                y, aux = self.moe_layer(h, L, li)
                x = x + y
                aux_total = aux_total + aux
        logits = rms_norm(x, self.norm) @ self.head.t()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss, aux_total


def load_bytes(data):
    exclude = data.get("exclude", [])
    files = []
    for p in data["paths"]:
        if os.path.isdir(p):
            for f in sorted(glob.glob(os.path.join(p, "**"), recursive=True)):
                if os.path.isfile(f) and not any(glob.fnmatch.fnmatch(os.path.basename(f), e)
                                                 for e in exclude):
                    files.append(f)
        else:
            files.append(p)
    return b"".join(open(f, "rb").read() for f in files)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("job")
    a.add_argument("--steps", type=int, default=40)
    a.add_argument("--warmup", type=int, default=5)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = a.parse_args()
    spec = yaml.safe_load(open(args.job))
    m, tr = spec["model"], spec["train"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(tr.get("seed", 1234))
    model = Model(m)
    opt_cfg = tr.get("optimizer", {})
    matrices = [p for p in model.parameters() if p.dim() == 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": opt_cfg.get("weight_decay", 0.1)},
         {"params": vectors, "weight_decay": 0.0}],
        lr=opt_cfg.get("lr", 3e-4), betas=(opt_cfg.get("beta1", 0.9), opt_cfg.get("beta2", 0.95)),
        eps=opt_cfg.get("eps", 1e-8))
    data = torch.frombuffer(bytearray(load_bytes(spec["data"])), dtype=torch.uint8).long()
    B, T = tr["global_batch"], m["seq_len"]
    gen = torch.Generator().manual_seed(tr.get("seed", 1234))
    gamma = m.get("moe", {}).get("balance", {}).get("bias_update_speed", 1e-3)
    clip = opt_cfg.get("grad_clip", 1.0)
    times, loss = [], None
    for step in range(args.steps):
        t0 = time.perf_counter()
        starts = torch.randint(0, len(data) - T - 1, (B,), generator=gen)
        window = torch.stack([data[s: s + T + 1] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, aux = model(window[:, :-1], window[:, 1:])
        opt.zero_grad(set_to_none=True)
        (loss + aux).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        with torch.no_grad():  # aux-loss-free balancing: bias += gamma * sign(mean - count)
            for li, c in model.counts.items():
                c = c.float()
                model.biases[li] += gamma * torch.sign(c.mean() - c)
        times.append(time.perf_counter() - t0)
    kept = times[args.warmup:]
    print(json.dumps({"bench": "train", "impl": "pytorch-eager", "torch": torch.__version__,
                      "precision": args.precision, "threads": args.threads,
                      "steps": len(kept), "tokens_per_step": B * T,
                      "tokens_per_s": B * T * len(kept) / sum(kept),
                      "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
