#!/usr/bin/python3
"""`moerun export` against Hugging Face's DeepseekV3 layout: a small MLA job with multi-token
prediction is trained, exported and evaluated by `moerun eval`; the exported files are then
loaded by tests/export/deepseek_v3_reference.py (PyTorch, written from the architecture's
description) and must give the same mean cross-entropy, main model and MTP modules, within
1e-4 relative. The tensor names must be exactly those of the published DeepSeek-V3 checkpoint
(model.layers.N with N the MTP module, embed_tokens and shared_head copies included).
Variants: queries through q_a/q_b (two MTP modules) and through one q_proj (one module).
Exits 77 (skipped) without Debian's python3-torch.

    test_hf_export.py --moerun BIN --source DIR --work DIR
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

TEXT = "/usr/share/games/fortunes/fortunes"
TOLERANCE = 1e-4


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit("FAILED: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
    return r.stdout


def expected_names(cfg):
    """Every tensor name of the published DeepSeek-V3 layout for this config."""
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    layers = cfg["num_hidden_layers"]
    for layer in range(layers + cfg["num_nextn_predict_layers"]):
        p = "model.layers.%d." % layer
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        a = p + "self_attn."
        if cfg["q_lora_rank"]:
            names |= {a + "q_a_proj.weight", a + "q_a_layernorm.weight", a + "q_b_proj.weight"}
        else:
            names.add(a + "q_proj.weight")
        names |= {a + "kv_a_proj_with_mqa.weight", a + "kv_a_layernorm.weight",
                  a + "kv_b_proj.weight", a + "o_proj.weight"}
        mlps = []
        if layer < cfg["first_k_dense_replace"]:
            mlps.append(p + "mlp.")
        else:
            names |= {p + "mlp.gate.weight", p + "mlp.gate.e_score_correction_bias"}
            mlps += [p + "mlp.experts.%d." % e for e in range(cfg["n_routed_experts"])]
            mlps.append(p + "mlp.shared_experts.")
        for m in mlps:
            names |= {m + "gate_proj.weight", m + "up_proj.weight", m + "down_proj.weight"}
        if layer >= layers:
            names |= {p + s for s in ("enorm.weight", "hnorm.weight", "eh_proj.weight",
                                      "embed_tokens.weight", "shared_head.norm.weight",
                                      "shared_head.head.weight")}
    return names


def check(name, a, b):
    rel = abs(a - b) / abs(a)
    print("%-28s moerun %.8f  reference %.8f  relative %.2e" % (name, a, b, rel))
    if rel > TOLERANCE:
        sys.exit("FAILED: %s differs by %.2e relative (tolerance %g)" % (name, rel, TOLERANCE))


def variant(args, name, edits):
    with open(os.path.join(args.source, "tests/configs/mla-mtp.yaml")) as f:
        text = f.read()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    work = os.path.join(args.work, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    job = os.path.join(work, "job.yaml")
    with open(job, "w") as f:
        f.write(text)
    run_dir, hf = os.path.join(work, "run"), os.path.join(work, "hf")
    run([args.moerun, "train", job, "--run-dir", run_dir, "--no-progress"])
    run([args.moerun, "export", "--run-dir", run_dir, "--out", hf])
    ours = json.loads(run([args.moerun, "eval", "--run-dir", run_dir, "--text", TEXT, "--json",
                           "--max-windows", "24"]))
    with open(os.path.join(hf, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(hf, "model.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        names = set(json.loads(f.read(n))) - {"__metadata__"}
    want = expected_names(cfg)
    if names != want:
        sys.exit("FAILED: %s: tensor names differ from DeepSeek-V3's layout: missing %s, extra %s"
                 % (name, sorted(want - names)[:8], sorted(names - want)[:8]))
    ref = json.loads(run([sys.executable, os.path.join(args.source,
                                                       "tests/export/deepseek_v3_reference.py"),
                          "--model", hf, "--text", TEXT, "--seq-len", str(ours["seq_len"]),
                          "--max-windows", "24"]))
    assert ref["windows"] == ours["windows"]
    check(name + " main model", ours["mean_cross_entropy"], ref["mean_cross_entropy"])
    check(name + " MTP modules", ours["mtp_cross_entropy"], ref["mtp_cross_entropy"])
    shutil.rmtree(work)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moerun", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("skipped: python3-torch is not installed (scripts/install-deps.sh --for-tests)")
        sys.exit(77)
    variant(args, "q_lora", [])
    variant(args, "q_proj", [("  q_lora_rank: 16\n", "  q_lora_rank: 0\n"),
                             ("    depth: 2\n", "    depth: 1\n")])
    print("ok: exported DeepSeek-V3 checkpoints reproduce moerun eval")


if __name__ == "__main__":
    main()
