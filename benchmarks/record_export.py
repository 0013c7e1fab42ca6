"""The record preset's export, measured: train the preset's exact shape for a short wall clock, run
the real export (its quantiser and codec, GPTQ inside the clock), reload and re-score, and print
bytes_code, bytes_model, bytes_total and the time of every phase. The README's size projection is
this script's output (benchmarks/results/record_export.json); tests/test_record_path.py keeps the
preset's parameter count equal to the one recorded there.

    python benchmarks/record_export.py --seconds 120                       # on a GPU: the real batch
    python benchmarks/record_export.py --iterations 3 --cpu-batch          # on this CPU: small batch, same shape
    python benchmarks/record_export.py --data DIR --tokenizer T.model --out benchmarks/results/record_export.json

It launches what a record submits: the record file (`bundle --preset record`), minified and packed,
so bytes_code is that file's size.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lila_golf.tools.bundle import build_file  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
KEYS = {  # log key -> JSON field
    "model_params": r"model_params:(\d+)", "bytes_code": r"bytes_code:(\d+) bytes_model", "bytes_model": r"bytes_model:(\d+)",
    "bytes_total": r"bytes_total:(\d+)", "train_steps": r"train_steps:(\d+)", "train_time_ms": r"train_steps:\d+ train_time_ms:(\d+)",
    "gptq_reserve_ms": r"gptq_reserve_ms:(\d+)", "gptq_time_ms": r"time_budget .*?gptq_time_ms:(\d+)",
    "export_time_ms": r"export_time_ms:(\d+)", "roundtrip_eval_ms": r"_roundtrip val_loss:\S+ val_bpb:\S+ tokens:\d+ bytes:\d+ eval_time:(\d+)ms",
    "roundtrip_val_bpb": r"_roundtrip val_loss:\S+ val_bpb:(\S+)", "float_val_bpb": r"final_float val_loss:\S+ val_bpb:(\S+)",
    "submitted_val_bpb": r"final_submitted val_loss:\S+ val_bpb:(\S+)", "quant_widths": r"quant_budget .*? widths:(\S+)",
    "device_name": r"device_name:(\S+)", "torch": r"torch:(\S+)",
}


def parse(log: str) -> dict:
    out = {}
    for key, pattern in KEYS.items():
        m = re.search(pattern, log)
        if m:
            out[key] = m.group(1) if key in ("device_name", "torch", "quant_widths") else float(m.group(1))
    if out.get("train_steps"):
        out["step_avg_ms"] = out["train_time_ms"] / out["train_steps"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="record", help="the preset whose record file and shape are measured")
    p.add_argument("--seconds", type=float, default=60.0, help="training wall clock (GPTQ reserve included)")
    p.add_argument("--iterations", type=int, default=0, help="train this many steps instead, uncapped (CPU)")
    p.add_argument("--cpu-batch", action="store_true", help="8,192 tokens a step at seq 512 (CPU); the shape is unchanged")
    p.add_argument("--data", default=str(SHARED / "fineweb10B_sp1024_mini"))
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "record_export.json"))
    p.add_argument("--log-out", default=None, help="also copy the run's train.log here")
    p.add_argument("--timeout", type=float, default=0, help="kill the run after this many seconds and keep what its log "
                   "holds (exit code 124); 0 = none")
    args = p.parse_args()
    env = {**os.environ, "PRESET": args.preset, "DATA_PATH": args.data, "TOKENIZER_PATH": args.tokenizer,
           "MAX_WALLCLOCK_SECONDS": str(args.seconds), "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "10", "RUN_ID": "record_export"}
    if args.iterations:
        env.update(ITERATIONS=str(args.iterations), MAX_WALLCLOCK_SECONDS="0")
    if args.cpu_batch:
        env.update(TRAIN_BATCH_TOKENS="8192", TRAIN_SEQ_LEN="512", GRAD_ACCUM_TOTAL="1", COMPILE="0")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "train_gpt.py"
        script.write_text(build_file(args.preset, packed=True, minified=True))
        env["OUT_DIR"] = str(Path(tmp) / "runs")
        t0 = time.time()
        try:
            proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp, capture_output=True, text=True,
                                  timeout=args.timeout or None)
        except subprocess.TimeoutExpired as e:  # a partial log still says how far it got, phase by phase
            stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            proc = subprocess.CompletedProcess(e.cmd, 124, "", stderr + f"\nkilled after --timeout {args.timeout:g} s")
        log_path = Path(tmp) / "runs" / "record_export" / "train.log"
        log = log_path.read_text() if log_path.exists() else ""
    if args.log_out:
        Path(args.log_out).write_text(log + "\n--- stderr tail ---\n" + proc.stderr[-5000:])
    if not log:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    result = {"preset": args.preset, "command": " ".join(["python"] + sys.argv), "exit_code": proc.returncode, "wall_s": round(time.time() - t0, 1),
              "seconds": args.seconds, "iterations": args.iterations, "cpu_batch": args.cpu_batch, "loadavg": open("/proc/loadavg").read().split()[:3],
              **parse(log)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result.items():
        print(f"{k}: {v}")
    return 0 if proc.returncode == 0 else proc.returncode


if __name__ == "__main__":
    sys.exit(main())
