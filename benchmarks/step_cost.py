"""Controlled cost per training step of geometry variants: same process, same batch, interleaved.

    python benchmarks/step_cost.py --variants plain leech_metric leech_frozen --rounds 8 --steps 5

The wall-clock ablation (geometry_ablation.py) reads cost from train_time / steps of runs made
minutes apart, so machine drift shows up as cost. Here every round times --steps optimiser steps
(forward + backward + Muon/Adam step on the CPU-track stack's batch of 8,192 tokens) of each variant
in turn, in one process, so drift hits all variants alike. Printed: the median over rounds of ms a
step, and the median over rounds of the ratio to the first variant's time in the same round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_track import ROWS  # noqa: E402
from geometry_ablation import VARIANTS  # noqa: E402

from lila_golf.core.config import Hyperparameters  # noqa: E402
from lila_golf.core.model import GPT  # noqa: E402
from lila_golf.core.optim import build_optimizers  # noqa: E402
from lila_golf.core.train import build_model, optimizer_kwargs  # noqa: E402


def build(variant: str, seed: int) -> tuple[GPT, list, Hyperparameters]:
    hp = Hyperparameters.from_env({"PRESET": "cpu_track", **ROWS["stack"], **VARIANTS[variant]})
    cpu = torch.device("cpu")
    torch.manual_seed(seed)
    model = build_model(hp, cpu)
    opts = build_optimizers(model, **optimizer_kwargs(hp, cpu))
    return model, opts, hp


def train_steps(model: GPT, opts: list, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        model(x, y).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["plain", "leech_metric", "leech_frozen"], choices=sorted(VARIANTS))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="optimiser steps a variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps a variant first")
    args = p.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--rounds and --steps must be >= 1, --warmup >= 0")
    runs = {v: build(v, seed=1) for v in args.variants}
    hp = runs[args.variants[0]][2]
    # one batch of the stack's shape (8,192 tokens: 32 x 256); token values do not change the cost
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, hp.vocab_size, (hp.train_batch_tokens // hp.train_seq_len, hp.train_seq_len + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    if args.warmup:
        for model, opts, _ in runs.values():
            train_steps(model, opts, x, y, args.warmup)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        order = args.variants if r % 2 == 0 else args.variants[::-1]  # alternate who goes first
        for v in order:
            model, opts, _ = runs[v]
            times[v].append(train_steps(model, opts, x, y, args.steps))
    base = times[args.variants[0]]
    print(f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps, batch {tuple(x.shape)}")
    print(f"{'variant':<16}{'median ms/step':>16}{'min':>9}{'max':>9}{'ratio (median of per-round)':>30}")
    for v in args.variants:
        ratio = statistics.median(t / b for t, b in zip(times[v], base))
        print(f"{v:<16}{statistics.median(times[v]):>16.0f}{min(times[v]):>9.0f}{max(times[v]):>9.0f}{ratio:>30.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
