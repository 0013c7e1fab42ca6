"""Cost per training step of each issue-17 switch on the CPU-track stack: one process, interleaved.

    flock /tmp/lila_timed.lock python benchmarks/frontier_step_cost.py --rounds 8 --steps 3
    flock /tmp/lila_timed.lock python benchmarks/frontier_step_cost.py --recompile   # torch.compile, loop switch

Every variant is the CPU-track `stack` row (benchmarks/cpu_track.py) with one switch on (`all`: every
switch at once); each round times --steps optimiser steps (forward + backward + Muon/Adam step on one
batch of 8,192 real tokens from the mini train shard) of every variant in turn, in alternating order,
so machine drift hits all alike. Printed per variant: median ms a step over rounds and the median of
its per-round ratio to `plain`. `loop` runs layers 1-2 twice (7 virtual layers instead of 5): more
compute by design. --recompile: with torch.compile (inductor, CPU), the first steps of the model with
the loop off, then the step that switches it on (a recompile) and the steps after it.
Results are CPU-scale: nothing here says what a switch costs on an H100.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_track import MINI, ROWS  # noqa: E402

from lila_golf.core.config import Hyperparameters  # noqa: E402
from lila_golf.core.data import read_shard  # noqa: E402
from lila_golf.core.optim import build_optimizers  # noqa: E402
from lila_golf.core.train import build_model, optimizer_kwargs  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "attn_gate": {"ATTN_GATE_WIDTH": "12", "ATTN_GATE_SCALE": "0.5"},
    "skip_gates": {"SKIP_GATES": "1"},
    "smear_bos_mask": {"SMEAR_BOS_MASK": "1"},
    "doc_isolation": {"DOC_ISOLATION": "1"},
    "lanes": {"PARALLEL_START": "3"},
    "loop": {"NUM_LOOPS": "1", "LOOP_START": "1", "LOOP_END": "2"},
    "softcap_neg": {"LOGIT_SOFTCAP_NEG": "20"},
    "polar_express": {"MUON_NS": "polar_express"},
    "row_normalize": {"MUON_ROW_NORMALIZE": "1"},
}
VARIANTS["all"] = {k: v for env in VARIANTS.values() for k, v in env.items()}
# --shape record: the record preset with its switches off (plain) or one on at its own setting
RECORD_OFF = {"ATTN_GATE_WIDTH": "0", "SKIP_GATES": "0", "SMEAR_BOS_MASK": "0", "PARALLEL_START": "0", "NUM_LOOPS": "0",
              "LOOP_ENABLE_AT": "0", "MUON_NS": "quintic", "MUON_ROW_NORMALIZE": "0"}
RECORD_SETTINGS = {"lanes": {"PARALLEL_START": "8"}, "loop": {"NUM_LOOPS": "2", "LOOP_START": "3", "LOOP_END": "5"}}


SHAPE, DEVICE = "cpu_track", torch.device("cpu")


def variant_env(variant: str) -> dict:
    if SHAPE == "cpu_track":
        return {"PRESET": "cpu_track", **ROWS["stack"], **VARIANTS[variant]}
    on = {**VARIANTS[variant], **RECORD_SETTINGS.get(variant, {})}
    if variant == "all":
        on.update({k: v for s in RECORD_SETTINGS.values() for k, v in s.items()})
    return {"PRESET": "record", **RECORD_OFF, **on}


def build(variant: str, seed: int = 1):
    hp = Hyperparameters.from_env(variant_env(variant))
    torch.manual_seed(seed)
    model = build_model(hp, DEVICE)
    return model, build_optimizers(model, **optimizer_kwargs(hp, DEVICE)), hp


def real_batch(hp) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: the stack's 32 x 256 from the mini train shard (real BOS positions); for the
    record shape one rank's micro-batch (TRAIN_BATCH_TOKENS / 8) of random ids, a BOS every 1,024."""
    n = hp.train_batch_tokens // hp.train_seq_len
    if SHAPE == "record":
        tokens = torch.randint(2, hp.vocab_size, (n // 8 * hp.train_seq_len + 1,), generator=torch.Generator().manual_seed(0))
        tokens[::1024] = hp.bos_id
        n //= 8
    else:
        tokens = torch.from_numpy(read_shard(MINI / "fineweb_train_000000.bin")[:n * hp.train_seq_len + 1].astype("int64"))
    return tokens[:-1].view(n, -1).to(DEVICE), tokens[1:].view(n, -1).to(DEVICE)


def train_steps(forward, model, opts, x, y, steps: int) -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=DEVICE.type == "cuda"):
            loss = forward(x, y)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / max(steps, 1)


def interleaved(variants, rounds: int, steps: int, warmup: int) -> dict:
    runs = {v: build(v) for v in variants}
    x, y = real_batch(runs[variants[0]][2])
    for model, opts, _ in runs.values():
        train_steps(model, model, opts, x, y, warmup)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:  # alternate who goes first
            model, opts, _ = runs[v]
            times[v].append(train_steps(model, model, opts, x, y, steps))
    return times


def recompile_cost(steps: int) -> dict:
    """ms of each step of a compiled model: loop off, then the step that switches it on, then on."""
    model, opts, hp = build("loop")
    x, y = real_batch(hp)
    model.set_looping(False)
    forward = torch.compile(model)
    out = {"off": [train_steps(forward, model, opts, x, y, 1) for _ in range(steps)]}
    model.set_looping(True)
    out["on"] = [train_steps(forward, model, opts, x, y, 1) for _ in range(steps)]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="optimiser steps a variant per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--recompile", action="store_true", help="measure the compiled loop switch instead")
    p.add_argument("--shape", choices=("cpu_track", "record"), default="cpu_track",
                   help="record: the record preset, switches off vs one on, one rank's micro-batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results" / "frontier_step_cost.jsonl"))
    args = p.parse_args()
    global SHAPE, DEVICE
    SHAPE, DEVICE = args.shape, torch.device(args.device)
    load_before = os.getloadavg()
    record = {"threads": torch.get_num_threads(), "load_before": load_before, "command": " ".join(sys.argv),
              "shape": SHAPE, "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"}
    if args.recompile:
        record["recompile"] = recompile_cost(max(args.steps, 3))
        for k, v in record["recompile"].items():
            print(f"compiled loop {k}: " + " ".join(f"{t:.0f}" for t in v) + " ms/step")
    else:
        variants = ["plain"] + [v for v in args.variants if v != "plain"]
        times = interleaved(variants, args.rounds, args.steps, args.warmup)
        print(f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps, load {load_before}")
        print(f"{'variant':<16}{'median ms/step':>16}{'min':>8}{'max':>8}{'ratio to plain':>16}")
        record["variants"] = {}
        for v in variants:
            ratio = statistics.median(t / b for t, b in zip(times[v], times["plain"]))
            record["variants"][v] = {"median_ms": statistics.median(times[v]), "ratio": ratio, "times": times[v]}
            print(f"{v:<16}{statistics.median(times[v]):>16.0f}{min(times[v]):>8.0f}{max(times[v]):>8.0f}{ratio:>16.3f}")
    record["load_after"] = os.getloadavg()
    print(f"load_after {record['load_after']}")
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
