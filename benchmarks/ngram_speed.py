"""Speed and memory of the final evaluation's n-gram phase (per-token online n-gram + learned mixer),
at 1 and 2 processes, projected to the official val set on 8 processes.

    flock /tmp/lila_timed.lock .venv/bin/python benchmarks/ngram_speed.py                  # 8.1M tokens, 1 and 2 processes
    flock /tmp/lila_timed.lock .venv/bin/python benchmarks/ngram_speed.py --max-tokens 2000000 --worlds 1
    .venv/bin/python benchmarks/ngram_speed.py --streaming --max-tokens 1000000            # the old BackoffNgram scorer

Runs lila_golf.core.final_eval.ngram_phase itself: each process (torch.distributed, gloo) computes the
targets whose previous token is in its part of the vocabulary, the parts are summed over processes,
and every process runs the mixer over the whole stream. The model's log-probabilities are stand-ins
(the cost does not depend on them). Prints key:value lines and appends a JSON line to
benchmarks/results/ngram_speed.jsonl: wall and CPU seconds of the slowest process, tokens/s, peak RSS
per process, the 1-minute load average before and after. Projection to 62,021,846 tokens on W
processes: t(W) = a + b / W fitted to the 1- and 2-process wall times (a: the part every process
repeats, b: the part split over processes), scaled linearly in tokens (the sorts are n log n: a
slight underestimate), from the wall clock and from the CPU seconds of the slowest process (what it
takes when every process has a core: the figure to trust on a shared, overloaded machine), and peak
RSS scaled linearly (every process holds whole-stream arrays).
"""
import argparse
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lila_golf.core.config import Hyperparameters  # noqa: E402
from lila_golf.core.data import read_shard  # noqa: E402
from lila_golf.core.final_eval import ngram_phase  # noqa: E402

VAL_TOKENS = 62_021_846
RESULTS = Path(__file__).resolve().parent / "results" / "ngram_speed.jsonl"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(rank: int, world: int, port: int, args, out) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    tokens = read_shard(args.shard, vocab_size=1024)[:args.max_tokens].astype(np.int64)
    hp = Hyperparameters(ngram_order=args.order)
    n = len(tokens) - 1
    model_logp, entropy = np.full(n, -3.5), np.full(n, 3.5)
    if world > 1:
        dist.barrier()
    c0, t0 = cpu_seconds(), time.perf_counter()
    mixed, weight = ngram_phase(model_logp, entropy, tokens, hp, torch.device("cpu"))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    out.put(dict(rank=rank, wall_s=wall, cpu_s=cpu, peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                 nats_per_token=-float(mixed.mean())))
    if world > 1:
        dist.destroy_process_group()


def run_world(world: int, args) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=worker, args=(r, world, port, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    rows = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return dict(wall_s=max(r["wall_s"] for r in rows), cpu_s=max(r["cpu_s"] for r in rows),
                peak_rss_bytes=max(r["peak_rss_bytes"] for r in rows), nats_per_token=rows[0]["nats_per_token"])


def streaming_rate(args) -> None:
    """The hash-table BackoffNgram scorer (NgramScorer) in 65,536-token chunks: score, then count."""
    from lila_golf.core.scoring import NgramScorer
    tokens = read_shard(args.shard, vocab_size=1024)[:args.max_tokens].astype(np.int64)
    scorer = NgramScorer(1024, max_order=args.order)
    scorer.begin(int(tokens[0]))
    c0, t0 = cpu_seconds(), time.perf_counter()
    for a in range(1, len(tokens), 65536):
        scorer.score_chunk(tokens[a:a + 65536])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"streaming_ngram tokens:{len(tokens) - 1} order:{args.order} wall_s:{wall:.1f} cpu_s:{cpu:.1f} "
          f"tokens_per_s:{(len(tokens) - 1) / wall:.0f} loadavg_1min:{os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", default="../shared/data/fineweb10B_sp1024_mini/fineweb_train_000001.bin")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--order", type=int, default=8)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--streaming", action="store_true", help="measure the old streaming NgramScorer instead")
    args = ap.parse_args()
    if args.streaming:
        return streaming_rate(args)
    n = len(read_shard(args.shard, vocab_size=1024)[:args.max_tokens]) - 1
    walls, cpus = {}, {}
    for world in args.worlds:
        load_before = os.getloadavg()[0]
        res = run_world(world, args)
        walls[world], cpus[world] = res["wall_s"], res["cpu_s"]
        row = dict(bench="ngram_phase", tokens=n, order=args.order, world_size=world, **res,
                   tokens_per_s=n / res["wall_s"], tokens_per_cpu_s_per_process=n / res["cpu_s"],
                   loadavg_1min_before=load_before, loadavg_1min_after=os.getloadavg()[0])
        print(" ".join(f"{k}:{v:.4g}" if isinstance(v, float) else f"{k}:{v}" for k, v in row.items()), flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
    if 1 in walls and 2 in walls:  # wall: as measured; cpu: as if every process had a core of its own
        for clock, t in (("wall", walls), ("cpu", cpus)):
            b = 2 * (t[1] - t[2])
            a = t[1] - b
            scale = VAL_TOKENS / n
            for w in (1, 2, 8):
                print(f"ngram_projection clock:{clock} tokens:{VAL_TOKENS} world_size:{w} seconds:{scale * (a + b / w):.0f} "
                      f"(t = a + b/W, a = {a:.2f} s, b = {b:.2f} s at {n} tokens; linear in tokens)")


if __name__ == "__main__":
    main()
