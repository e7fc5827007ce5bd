#!/usr/bin/python3
"""torch.distributed's gloo all-reduce (and all-to-all) between N processes on this machine,
for comparison with `moerun-bench allreduce|alltoall`. Same keys, same bandwidth formulas.
Needs Debian's python3-torch (run with /usr/bin/python3)."""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, a, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=a.nproc)
    n = a.bytes // 4
    buf = torch.ones(n)
    out = torch.empty(n)

    def once():
        if a.op == "allreduce":
            buf.fill_(1.0)
            dist.all_reduce(buf)
        else:
            dist.all_to_all_single(out, buf)
        dist.barrier()

    once()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        s = statistics.median(times)
        algbw = a.bytes / s / 1e9
        factor = 2 * (a.nproc - 1) / a.nproc if a.op == "allreduce" else (a.nproc - 1) / a.nproc
        print(json.dumps({"bench": a.op, "impl": "torch-gloo", "torch": torch.__version__,
                          "transport": "tcp", "nproc": a.nproc, "bytes": a.bytes, "median_s": s,
                          "algbw_gbps": algbw, "busbw_gbps": algbw * factor}), flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["allreduce", "alltoall"])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--bytes", type=int, default=64 << 20)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    mp.spawn(worker, args=(a, 29400 + os.getpid() % 500), nprocs=a.nproc)


if __name__ == "__main__":
    main()
