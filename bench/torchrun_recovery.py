#!/usr/bin/python3
"""torchrun's recovery on this machine, for comparison with `moerun-bench recovery`.

Driver:  bench/torchrun_recovery.py [--fault kill|stop] [--trials N] [--at-step K]
Runs `python3 -m torch.distributed.run --standalone --nproc_per_node 4 --max_restarts 3`
(torchrun's defaults otherwise) over a small data-parallel gloo job that checkpoints every 50
steps and resumes from it. At step K one worker is SIGKILLed or SIGSTOPped. Prints one JSON
line per trial:
  detect_ms         fault -> torchrun has started new workers (the restart is its only sign
                    of detection)
  fault_to_step_ms  fault -> the first step completed after it (-1: none within the cap)
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

CAP_S = 90  # a run that has not recovered by then counts as not recovered

# torchrun itself, with one fix: Debian 12's torch 1.13 under Python 3.11 parses the default
# --redirects/--tee into None (an Enum change) and crashes before starting any worker.
TORCHRUN_SHIM = """
import sys
import torch.distributed.elastic.multiprocessing as mp
import torch.distributed.elastic.multiprocessing.api as api
from torch.distributed.elastic.multiprocessing.api import Std
_to_map = api.to_map
def to_map(v, n):
    return _to_map(Std.NONE if v is None else v, n)
api.to_map = mp.to_map = to_map
from torch.distributed.run import main
sys.argv[0] = "torchrun"
main()
"""


def worker(args):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    start = 0
    if os.path.exists(args.ckpt):
        state = torch.load(args.ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    for step in range(start + 1, args.steps + 1):
        g = torch.Generator().manual_seed(step * 100 + rank)
        x = torch.randn(256, 512, generator=g)
        loss = (ddp(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0:
            with open(args.log, "a") as f:
                f.write(json.dumps({"step": step, "time": time.time()}) + "\n")
            if step % 50 == 0:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},
                           args.ckpt + ".tmp")
                os.replace(args.ckpt + ".tmp", args.ckpt)
    dist.destroy_process_group()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def last_step(log):
    try:
        with open(log) as f:
            lines = [l for l in f if l.strip()]
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):
        return 0


def trial(args, n):
    d = tempfile.mkdtemp(prefix="torchrun-recovery-")
    log, ckpt = os.path.join(d, "steps.jsonl"), os.path.join(d, "ckpt.pt")
    cmd = [sys.executable, "-c", TORCHRUN_SHIM, "--standalone", "--nproc_per_node", "4",
           "--max_restarts", "3", os.path.abspath(__file__), "--worker", "--steps",
           str(args.steps), "--log", log, "--ckpt", ckpt]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(d + "/torchrun.log", "w"),
                             env=env, start_new_session=True)
    result = {"bench": "recovery-torchrun", "fault": args.fault, "trial": n}
    try:
        deadline = time.time() + 300
        while last_step(log) < args.at_step and time.time() < deadline:
            time.sleep(0.02)
        workers = children(agent.pid)
        if not workers:
            result["error"] = "no workers"
            return result
        fault_t = time.time()
        os.kill(workers[-1], signal.SIGSTOP if args.fault == "stop" else signal.SIGKILL)
        detect = step_t = None
        while time.time() < fault_t + CAP_S and (detect is None or step_t is None):
            now_workers = children(agent.pid)
            if detect is None and now_workers and not set(now_workers) & set(workers):
                detect = time.time()
            try:
                with open(log) as f:
                    for line in f:
                        t = json.loads(line)["time"]
                        if t > fault_t and step_t is None:
                            step_t = t
            except (OSError, ValueError):
                pass
            if agent.poll() is not None:
                break
            time.sleep(0.02)
        result["detect_ms"] = round((detect - fault_t) * 1000) if detect else -1
        result["fault_to_step_ms"] = round((step_t - fault_t) * 1000) if step_t else -1
        if step_t is None:
            result["note"] = f"no step completed within {CAP_S} s of the fault"
        return result
    finally:
        try:
            os.killpg(agent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        agent.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--fault", default="kill", choices=["kill", "stop"])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--at-step", type=int, default=60)
    p.add_argument("--log")
    p.add_argument("--ckpt")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    results = [trial(args, n) for n in range(args.trials)]
    for r in results:
        print(json.dumps(r), flush=True)
    for k in ("detect_ms", "fault_to_step_ms"):
        v = sorted(r[k] for r in results if r.get(k, -1) >= 0)
        if v:
            print(json.dumps({"bench": "recovery-torchrun", "fault": args.fault,
                              k + "_median": v[len(v) // 2], "recovered": len(v), "trials": len(results)}))


if __name__ == "__main__":
    main()
