"""How often the audit catches a scorer that cheats on a fraction f of positions, measured over seeds.

    .venv/bin/python benchmarks/audit_detection.py --seeds 200          # ~20 min on 2 cores
    .venv/bin/python benchmarks/audit_detection.py --seeds 20 --fractions 0.01

For each cheat kind of tests/audit_cheats.py and each fraction f, runs the audit with the CLI's
default settings (first 65,536 tokens of the official val head, chunk 8,192, one whole chunk and 512
scattered positions probed per probed pass, 32 reruns) at seeds 0..S-1; the cheat's positions are a
fresh random set per seed (key = 1000 + seed), so each audit is an independent trial (kinds ending in
"_block": one contiguous run of f * n targets at a seed-chosen place). Prints one
row per (kind, f): caught / seeds with a 95% Wilson interval, the formula 1 - (1 - f)^N with N the
mean number of probed positions (probe-exposed kinds) or of reruns (rerun-exposed kinds), and
which conditions failed. The honest base scorer is BigramScorer (fast; detection depends on where
the audit looks, not on the model). Rows are appended to benchmarks/results/audit_detection.jsonl.
"""
import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lila_golf.core.data import read_shard  # noqa: E402
from lila_golf.tools.audit import run_audit  # noqa: E402
from tests.audit_cheats import CHEAT_KINDS, BigramScorer, CheatingScorer  # noqa: E402

SHARD = Path(__file__).resolve().parents[2] / "shared/data/fineweb10B_sp1024_mini/fineweb_val_000000.bin"
RERUN_EXPOSED = ("update_first", "peek_future")  # consistent and normalised: only a rerun at t shows it


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _cheater(kind: str, f: float, seed: int, n_targets: int):
    """kind "<kind>_block": the cheat on one contiguous run of f * n targets at a seed-chosen place."""
    if kind.endswith("_block"):
        length = max(1, round(f * n_targets))
        start = 1 + (seed * 7919) % (n_targets - length)
        return lambda: CheatingScorer(BigramScorer(1024), kind.removesuffix("_block"), f, block=(start, length))
    return lambda: CheatingScorer(BigramScorer(1024), kind, f, key=1000 + seed)


def measure(tokens, kind: str, f: float, seeds: int, chunk_size: int) -> dict:
    caught, failed, probed, reruns = 0, Counter(), [], []
    for seed in range(seeds):
        res = run_audit(_cheater(kind, f, seed, len(tokens) - 1), tokens, chunk_size=chunk_size, seed=seed)
        bad = [r.condition for r in res if not r.passed]
        caught += bool(bad)
        failed.update(bad)
        probed.append(res.probed)
        reruns.append(res.checked)
    n_exposed = float(np.mean(reruns if kind in RERUN_EXPOSED else probed))
    formula = 1 - (1 - f) ** n_exposed
    if kind.endswith("_block"):  # a run of L targets: missed unless a probed chunk overlaps it or a
        n, L = len(tokens) - 1, max(1, round(f * (len(tokens) - 1)))  # scattered/rerun probe lands in it
        scattered = 2 * 512 + float(np.mean(reruns))
        formula = 1 - max(0.0, 1 - 2 * (chunk_size + L - 1) / n) * (1 - L / n) ** scattered
    lo, hi = wilson(caught, seeds)
    return {"kind": kind, "fraction": f, "seeds": seeds, "caught": caught, "rate": caught / seeds,
            "ci95": [round(lo, 4), round(hi, 4)], "exposed_positions": n_exposed,
            "formula": formula, "failed_conditions": dict(failed),
            "targets": len(tokens) - 1, "chunk_size": chunk_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    ap.add_argument("--kinds", nargs="+", default=list(CHEAT_KINDS),
                    help=f"{', '.join(CHEAT_KINDS)}, or any of them + '_block' (one contiguous run)")
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--chunk-size", type=int, default=8192)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "audit_detection.jsonl"))
    args = ap.parse_args()
    tokens = read_shard(SHARD, vocab_size=1024)[:args.max_tokens].astype(np.int64)
    print(f"load_before:{os.getloadavg()[0]:.2f}")
    print("| cheat | f | caught / seeds | 95% interval | formula 1-(1-f)^N | N | conditions failed |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for f in args.fractions:
            t0 = time.perf_counter()
            row = measure(tokens, kind, f, args.seeds, args.chunk_size)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            conds = ", ".join(f"{c} {k}" for c, k in sorted(row["failed_conditions"].items())) or "-"
            print(f"| {kind} | {100 * f:g}% | {row['caught']} / {row['seeds']} | {100 * row['ci95'][0]:.1f}-"
                  f"{100 * row['ci95'][1]:.1f}% | {100 * row['formula']:.1f}% | {row['exposed_positions']:.0f} | {conds} |",
                  flush=True)
    print(f"load_after:{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
