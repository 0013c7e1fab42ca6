"""CPU track: a fixed wall clock on this 2-core machine, trained on the mini train shards and scored
on every token of the official val head (131,071 targets) with exact bytes after the roundtrip.

    python benchmarks/cpu_track.py --rows baseline stack --seeds 1 2 [--seconds 600]

Each (row, seed) is one run folder under runs/cpu_track/, launched exactly as a record run (the
bundled train_gpt.py copied into the folder). One run at a time: the machine has 2 cores. Results
are appended to benchmarks/results/cpu_track.jsonl and printed as a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from lila_golf.tools.demo import launch_run
from lila_golf.tools.records import parse_run_log

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "fineweb10B_sp1024_mini"
TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"

# Row -> env overrides on top of PRESET=cpu_track (a row may name its own PRESET). These rows are the
# issue-3 measurements, kept as they ran; the current best recipe is PRESET=cpu_track itself.
ROWS: dict[str, dict[str, str]] = {
    # the challenge's baseline architecture and schedule scaled to this machine (as in the issue's
    # reference run: 4 layers, d 256, seq 512, 16,384 tokens/step, 8 micro-batches, warmdown 1200),
    # with this project's orthogonal init and a 20-step lr warmup (the challenge script has neither:
    # PRESET=baseline is that script, benchmarks/parity.py)
    "baseline": dict(PRESET="baseline", NUM_LAYERS="4", MODEL_DIM="256", TRAIN_SEQ_LEN="512", TRAIN_BATCH_TOKENS="16384",
                     WEIGHT_INIT="orthogonal", WARMUP_STEPS="20", WARMUP_RESTORE_STEPS="0", ITERATIONS="100000",
                     VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="25"),
    # the best stack of issue 3 (see RESULTS.md for how it was chosen): a step-counted warmdown
    "stack": dict(NUM_LAYERS="5", MODEL_DIM="192", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="3",
                  TRAIN_SEQ_LEN="256", TRAIN_BATCH_TOKENS="8192", GRAD_ACCUM_TOTAL="1",
                  ACTIVATION="leaky_relu2", BIGRAM_HASH_BUCKETS="2048", BIGRAM_DIM="64", SMEAR_GATE="1",
                  XSA_LAST_N="2", LN_SCALE="1", ROPE_DIMS="16", WARMUP_STEPS="10", WARMDOWN_STEPS="720",
                  WARMDOWN_FRAC="0", MATRIX_LR="0.06", SCALAR_LR="0.06", EMBED_LR="0.08", EMA_DECAY="0"),
}


def run_row(row: str, seed: int, seconds: float, out: Path, extra: dict[str, str], tag: str = "") -> dict:
    run_dir = out / f"{row}{tag}_s{seed}"
    if (run_dir / "train.log").exists():
        (run_dir / "train.log").unlink()  # a rerun replaces the old log instead of appending to it
    env = {"PRESET": "cpu_track", "DATA_PATH": str(MINI), "TOKENIZER_PATH": str(TOKENIZER), "SEED": str(seed),
           "MAX_WALLCLOCK_SECONDS": str(seconds), "SAVE_FLOAT_WEIGHTS": "1", **ROWS[row], **extra}
    t0 = time.time()
    status = launch_run(run_dir, env)
    run = parse_run_log(run_dir / "train.log")
    tokens_per_step = int(env.get("TRAIN_BATCH_TOKENS", run.config.get("train_batch_tokens", 0)))
    return dict(row=row + tag, seed=seed, status=status, val_bpb=float(run.val_bpb),
                val_loss=float(run.val_loss), steps=run.steps, train_time_ms=run.train_time_ms,
                tokens_per_s=run.steps * tokens_per_step / (run.train_time_ms / 1000),
                bytes_total=run.bytes_total, float_val_bpb=float(run.float_val_bpb),
                params=run.model_params, wall_s=time.time() - t0,
                load_avg_1m=os.getloadavg()[0], run_dir=str(run_dir), overrides={**ROWS[row], **extra})


def print_table(results: list[dict]) -> None:
    rows = sorted({r["row"] for r in results})
    print(f"{'row':<12}{'seeds':>6}{'val_bpb mean':>14}{'std':>9}{'steps':>8}{'tok/s':>9}{'bytes':>10}")
    for row in rows:
        rs = [r for r in results if r["row"] == row]
        bpb = [r["val_bpb"] for r in rs]
        std = statistics.stdev(bpb) if len(bpb) > 1 else float("nan")
        print(f"{row:<12}{len(rs):>6}{statistics.mean(bpb):>14.4f}{std:>9.4f}"
              f"{statistics.mean(r['steps'] for r in rs):>8.0f}{statistics.mean(r['tokens_per_s'] for r in rs):>9.0f}"
              f"{max(r['bytes_total'] for r in rs):>10}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=["baseline", "stack"], choices=sorted(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--out", default=str(REPO / "runs" / "cpu_track"))
    p.add_argument("--set", nargs="*", default=[], help="extra KEY=VALUE env overrides for every run")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "cpu_track.jsonl"))
    p.add_argument("--tag", default="", help="suffix for run folder names (tuning variants)")
    args = p.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.set)
    results = []
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # interleave rows per seed so slow drift in machine load hits both
        for row in args.rows:
            res = run_row(row, seed, args.seconds, Path(args.out), extra, args.tag)
            results.append(res)
            with open(args.results, "a") as f:
                f.write(json.dumps(res) + "\n")
            print(json.dumps(res), flush=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
