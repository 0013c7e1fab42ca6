"""Launch runs the way a record runs: bundle train_gpt.py into the run folder and execute that file.

    python -m lila_golf demo                       # smoke preset, end to end: train, pack, score
    python -m lila_golf train --preset cpu_track --run-id my_run [--nproc 2]

A run folder (runs/<run_id>/) holds train.log, config.json, the artifact and the exact train_gpt.py
that ran. Data: DATA_PATH/TOKENIZER_PATH (or --data-path/--tokenizer) when given, else the challenge's
data/ layout in the working directory, else an embedded corpus built offline (scores on it are
labelled "not FineWeb").
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ..core.config import environment
from .bundle import build_file, left_out_modules
from .records import parse_run_log


def submission_file(env: dict[str, str]) -> str:
    """The file a record submits for this run: the preset's record file, minified and packed (its
    bytes are the code bytes counted); the complete file when the run switches on a feature that the
    preset's record file leaves out (a geometry ablation, say)."""
    preset = env.get("PRESET", "smoke")
    _, left_out = left_out_modules(preset)
    needs_complete = any(k.upper() in env for k in left_out)
    return build_file(None if needs_complete else preset, packed=True, minified=True)


def launch_run(run_dir: Path, env: dict[str, str], nproc: int = 1) -> int:
    """Write the submitted train_gpt.py (submission_file) into run_dir and run it there (torchrun
    when nproc > 1): the file that ran is the file that counts, and its code_sha256 is in the log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / "train_gpt.py"
    script.write_text(submission_file(env), encoding="utf-8")
    env = {**environment(), **env, "OUT_DIR": str(run_dir.parent), "RUN_ID": run_dir.name}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    return subprocess.call(cmd, env=env)


def resolve_run_data(args) -> tuple[str, str, bool]:
    from .corpus import resolve_data
    env = environment()
    return resolve_data(args.data_path or env.get("DATA_PATH"), args.tokenizer or env.get("TOKENIZER_PATH"))


def run_train(args) -> int:
    data_path, tokenizer, is_fineweb = resolve_run_data(args)
    run_id = args.run_id or f"{args.preset}_{time.strftime('%Y%m%d_%H%M%S')}"
    run_dir = Path(args.out) / run_id
    env = {"PRESET": args.preset, "DATA_PATH": data_path, "TOKENIZER_PATH": tokenizer}
    if args.seed is not None:
        env["SEED"] = str(args.seed)
    status = launch_run(run_dir, env, args.nproc)
    summarise(run_dir, is_fineweb)
    return status


def summarise(run_dir: Path, is_fineweb: bool) -> None:
    log_path = run_dir / "train.log"
    if not log_path.exists():
        print(f"run failed before writing {log_path}")
        return
    run = parse_run_log(log_path)
    data = run.data_label or ("fineweb" if is_fineweb else "embedded_pydoc")  # the log's label: from the tokens
    label = "" if data == "fineweb" else f"  (data:{data}: NOT FineWeb, not comparable to challenge scores)"
    if run.val_bpb is not None:
        print(f"val_bpb:{run.val_bpb} data:{data}{label}")
    valid = "?" if run.artifact_valid is None else str(run.artifact_valid).lower()
    print(f"bytes_total:{_or_unknown(run.bytes_total)} bytes_model:{_or_unknown(run.bytes_model)} "
          f"bytes_code:{_or_unknown(run.bytes_code)} valid:{valid}")
    print(f"run_dir:{run_dir}")


def _or_unknown(value) -> str:
    return "?" if value is None else str(value)


def _add_run_args(p, preset: str) -> None:
    p.add_argument("--preset", default=preset, help=f"config preset (default {preset})")
    p.add_argument("--data-path", "--data_path", default=None, help="folder with fineweb_{train,val}_*.bin")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model matching the shards")
    p.add_argument("--out", default="runs", help="parent folder of run folders")
    p.add_argument("--run-id", "--run_id", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--nproc", type=int, default=1, help="processes (torchrun --nproc_per_node)")
    p.set_defaults(func=run_train)


def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train the smoke preset end to end, pack and score")
    _add_run_args(p, "smoke")


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="run a training preset in a run folder (other settings: env vars)")
    _add_run_args(p, "cpu_track")
