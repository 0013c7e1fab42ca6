"""Per-step cost of the official baseline script and our rows, op by op (torch.profiler), issue 14.

    python benchmarks/parity_profile.py --rows official parity old_baseline --threads 1 --steps 4

Each row runs its own script (the official one patched for CPU into its run folder, ours bundled) in
a child process pinned to core 0 (`--threads 1`) or on both cores (`--threads 2`), under this file as
a driver: a global optimiser-step hook finds the step boundaries, times --steps steps without the
profiler after --skip steps, then profiles --steps more and exits before the final evaluation. The
lr warm-up steps that are undone (official WARMUP_STEPS, our WARMUP_RESTORE_STEPS) are switched off
here: they do not change the cost of a step. Holds /tmp/lila_timed.lock for the whole measurement
and writes the load beside it; results in benchmarks/results/parity_profile.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity import REPO, loadavg, parse_row, prepare, timed_lock  # noqa: E402

from lila_golf.tools.bundle import build_file  # noqa: E402


def drive(script: str, skip: int, steps: int, out: str) -> None:
    """In the child: run `script` as __main__, timing and then profiling whole optimiser steps."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    calls, marks = [], []
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def hook(opt, args, kwargs):
        calls.append(id(opt))
        if calls.count(calls[0]) < 2 or len(calls) % calls.index(calls[0], 1):
            return  # not yet the end of a step (the step's last optimiser is not known before step 2)
        done = len(calls) // calls.index(calls[0], 1)  # the end of step `done` (exact once n_opt is known)
        marks.append((done, time.perf_counter()))
        if done == skip + steps:
            prof.start()
        elif done == skip + 2 * steps:
            prof.stop()
            finish(prof, marks, skip, steps, out)

    register_optimizer_step_post_hook(hook)
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")
    raise SystemExit(f"{script} finished before {skip + 2 * steps} steps")


def finish(prof, marks, skip: int, steps: int, out: str) -> None:
    t = dict(marks)
    table = [dict(op=e.key, self_ms=e.self_cpu_time_total / 1000 / steps, calls=e.count / steps)
             for e in prof.key_averages()]
    table.sort(key=lambda r: -r["self_ms"])
    result = dict(step_ms=1000 * (t[skip + steps] - t[skip]) / steps,
                  profiled_step_ms=1000 * (t[skip + 2 * steps] - t[skip + steps]) / steps,
                  profiled_self_ms=sum(r["self_ms"] for r in table), ops=table[:40])
    Path(out).write_text(json.dumps(result))
    os._exit(0)  # skip the final evaluation and export


def profile_row(spec: str, threads: int, skip: int, steps: int, out_dir: Path, bundle: str) -> dict:
    label, script, env = parse_row(spec)
    env = {**env, ("WARMUP_STEPS" if script == "official" else "WARMUP_RESTORE_STEPS"): "0"}
    job = dict(run_dir=str(out_dir / f"{label}_t{threads}"), script=script, env=env, seed=1)
    cmd, run_env, _ = prepare(job, 600.0, bundle)
    out = Path(job["run_dir"]) / "profile.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--drive", cmd[-1], "--skip", str(skip), "--steps", str(steps), "--out", str(out)]
    if threads == 1:
        cmd = ["taskset", "-c", "0"] + cmd
    run_env = {**os.environ, **run_env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, cwd=job["run_dir"], env=run_env, capture_output=True, text=True)
    if not out.exists():
        raise RuntimeError(f"{label}: no profile ({proc.returncode})\n{proc.stderr[-3000:]}")
    return dict(row=label, spec=spec, threads=threads, **json.loads(out.read_text()))


def print_tables(results: list[dict], top: int) -> None:
    """One table per thread count: the rows side by side (each row's latest measurement)."""
    for threads in sorted({r["threads"] for r in results}):
        latest = {r["row"]: r for r in results if r["threads"] == threads}
        rows = list(latest.values())
        print(f"\n{threads} thread(s):\n")
        for r in rows:
            print(f"- {r['row']}: {r['step_ms']:.0f} ms a step unprofiled, {r['profiled_step_ms']:.0f} profiled "
                  f"(started {r['started']} UTC, load {r['load_start']} -> {r['load_end']})")
        ops = {r["row"]: {o["op"]: o for o in r["ops"]} for r in rows}
        names = sorted({n for r in rows for n in ops[r["row"]]}, key=lambda n: -max(
            ops[r["row"]].get(n, {"self_ms": 0})["self_ms"] for r in rows))[:top]
        print("\n| op (self ms a step; calls a step) | " + " | ".join(r["row"] for r in rows) + " |")
        print("|---|" + "---|" * len(rows))
        for n in names:
            cells = [ops[r["row"]].get(n) for r in rows]
            print(f"| `{n}` | " + " | ".join(f"{c['self_ms']:.0f}; {c['calls']:.0f}" if c else "-" for c in cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=["official", "parity"])
    p.add_argument("--threads", type=int, choices=(1, 2), default=1)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=str(REPO / "runs" / "parity_profile"))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "parity_profile.jsonl"))
    p.add_argument("--drive", help=argparse.SUPPRESS)
    p.add_argument("--report", action="store_true", help="print the tables of the results file only")
    args = p.parse_args(argv)
    if args.drive:
        drive(args.drive, args.skip, args.steps, args.out)
    if args.report:
        print_tables([json.loads(l) for l in Path(args.results).read_text().splitlines() if l.strip()], args.top)
        return 0
    results, bundle = [], build_file(None, False, False)  # our code as it is now
    with timed_lock():
        for spec in args.rows:
            start = loadavg()
            res = profile_row(spec, args.threads, args.skip, args.steps, Path(args.out), bundle)
            res.update(load_start=start, load_end=loadavg(), started=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
            results.append(res)
    with open(args.results, "a") as f:
        for res in results:
            f.write(json.dumps(res) + "\n")
    print_tables(results, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
