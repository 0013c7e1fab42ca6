"""Issue 6 ablation: the CPU-track stack, plain vs every E8 / Leech variant, at equal wall clock.

    python benchmarks/geometry_ablation.py screen --seconds 300 --seeds 1 2 [--variants ...]
    python benchmarks/geometry_ablation.py final --seconds 600 --seeds 1 2 3 --variants plain A B
    python benchmarks/geometry_ablation.py report [--report-stage screen|final] [--plain-from-cpu-track]

screen: both seeds of a variant run at the same time, one thread each (OMP_NUM_THREADS=1), so the
two cores give a 2-seed screen in one wall-clock slot; every variant sees the same contention.
final: one run at a time with both cores, as the CPU track itself (benchmarks/cpu_track.py).
Results go to benchmarks/results/geometry_ablation.jsonl (one line per run, with the stage); the
report pairs each variant with plain by seed: mean difference, paired t-test p-value (scipy), and
the cost per step (train_time_ms / steps) against plain's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_track import REPO, run_row  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "geometry_ablation.jsonl"
CPU_TRACK_RESULTS = REPO / "benchmarks" / "results" / "cpu_track.jsonl"

# Variant -> env overrides on top of the cpu_track "stack" row (5 x d192, 4 heads of 48, 2 KV heads).
# head_dim 48 is a multiple of 8 (E8 blocks) and of 24 (Leech blocks); model_dim 192 = 8 x 24.
VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "e8_bias": dict(ATTN_GEOMETRY="e8"),
    "e8_side_st": dict(E8_SIDEBRANCH="st"),
    "e8_side_soft": dict(E8_SIDEBRANCH="soft"),
    "e8_adapter": dict(E8_ADAPTER="1"),
    "leech_metric": dict(ATTN_GEOMETRY="leech_metric"),
    "leech_frozen": dict(ATTN_GEOMETRY="leech_frozen"),
    # frozen Q/K saves 55,296 params a layer (W_q 192x192 + W_k 192x96): 6 frozen layers have about
    # the parameters of 5 plain ones, so this is the equal-artifact-budget use of the saving
    "leech_frozen_6L": dict(ATTN_GEOMETRY="leech_frozen", NUM_LAYERS="6"),
    "leech_loss": dict(LEECH_LOSS_WEIGHT="0.05"),
}


def run_variant(variant: str, seed: int, seconds: float, stage: str, extra: dict[str, str]) -> dict:
    out = REPO / "runs" / "geometry" / stage
    res = run_row("stack", seed, seconds, out, {**VARIANTS[variant], **extra}, tag=f"_{variant}")
    res.update(variant=variant, stage=stage, seconds=seconds, threads=extra.get("OMP_NUM_THREADS", "all"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(res) + "\n")
    print(json.dumps(res), flush=True)
    return res


def screen(args, extra: dict[str, str]) -> None:
    extra = {"OMP_NUM_THREADS": "1", **extra}
    for variant in args.variants:
        with ThreadPoolExecutor(max_workers=len(args.seeds)) as pool:
            list(pool.map(lambda s: run_variant(variant, s, args.seconds, "screen", extra), args.seeds))


def final(args, extra: dict[str, str]) -> None:
    for seed in args.seeds:  # interleave variants per seed so slow drift in load hits all of them
        for variant in args.variants:
            run_variant(variant, seed, args.seconds, "final", extra)


def load(stage: str, plain_from_cpu_track: bool = False) -> dict[str, dict[int, dict]]:
    by_variant: dict[str, dict[int, dict]] = {}
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        if r["stage"] == stage and r["status"] == 0:
            by_variant.setdefault(r["variant"], {})[r["seed"]] = r  # a rerun replaces the older line
    if plain_from_cpu_track:
        # the CPU track's "stack" row IS plain at 600 s with both cores (same overrides, same seeds)
        for line in CPU_TRACK_RESULTS.read_text().splitlines():
            r = json.loads(line)
            if r["row"] == "stack" and r["status"] == 0 and r["train_time_ms"] >= 590_000:
                by_variant.setdefault("plain", {})[r["seed"]] = r
    return by_variant


def report(stage: str, plain_from_cpu_track: bool = False) -> None:
    runs = load(stage, plain_from_cpu_track)
    plain = runs.get("plain", {})
    print(f"stage {stage}: val_bpb after the int8+zlib roundtrip, all 131,071 val-head targets"
          + ("; plain = the CPU-track stack runs" if plain_from_cpu_track else ""))
    print(f"{'variant':<17}{'seeds':>6}{'bpb mean':>10}{'std':>8}{'d vs plain':>12}{'p (paired)':>11}"
          f"{'steps':>7}{'ms/step':>9}{'cost':>7}{'params':>10}{'bytes':>10}")
    plain_ms = statistics.mean(r["train_time_ms"] / r["steps"] for r in plain.values()) if plain else float("nan")
    for variant in VARIANTS:
        rs = runs.get(variant)
        if not rs:
            continue
        bpb = [r["val_bpb"] for r in rs.values()]
        std = statistics.stdev(bpb) if len(bpb) > 1 else float("nan")
        shared = sorted(set(rs) & set(plain))
        diffs = [rs[s]["val_bpb"] - plain[s]["val_bpb"] for s in shared]
        d = statistics.mean(diffs) if diffs and variant != "plain" else float("nan")
        p = stats.ttest_rel([rs[s]["val_bpb"] for s in shared], [plain[s]["val_bpb"] for s in shared]).pvalue \
            if len(shared) > 1 and variant != "plain" else float("nan")
        ms = statistics.mean(r["train_time_ms"] / r["steps"] for r in rs.values())
        print(f"{variant:<17}{len(bpb):>6}{statistics.mean(bpb):>10.4f}{std:>8.4f}{d:>+12.4f}{p:>11.3g}"
              f"{statistics.mean(r['steps'] for r in rs.values()):>7.0f}{ms:>9.0f}{ms / plain_ms:>7.2f}"
              f"{max(r['params'] for r in rs.values()):>10}{max(r['bytes_total'] for r in rs.values()):>10}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["screen", "final", "report"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--set", nargs="*", default=[], help="extra KEY=VALUE env overrides for every run")
    p.add_argument("--report-stage", default="screen", choices=["screen", "final"])
    p.add_argument("--plain-from-cpu-track", action="store_true",
                   help="final: take plain from the CPU-track stack rows instead of rerunning it")
    args = p.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.set)
    if args.stage == "screen":
        screen(args, extra)
    elif args.stage == "final":
        final(args, extra)
    report(args.report_stage if args.stage == "report" else args.stage, args.plain_from_cpu_track)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
