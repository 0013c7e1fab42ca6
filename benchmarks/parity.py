"""Side by side with the challenge's baseline script (issue 14): the official train_gpt.py, patched
for CPU at run time into its run folder, and any of our rows, in the same regime, seeds interleaved.

    python benchmarks/parity.py run --regime together --rows official parity --seeds 1 2 --tag gap
    python benchmarks/parity.py run --regime alone --rows official parity stack --seeds 1 2 --tag gap
    python benchmarks/parity.py run --regime together --rows official "ortho=parity+WEIGHT_INIT=orthogonal" ...
    python benchmarks/parity.py report --tag gap [onechange ...] [--regime together] [--ref official]

Regimes: `together` runs two jobs at once, each pinned to its own core (`taskset -c 0|1`) with one
thread (the cores alternate between pairs); `alone` runs one job at a time with 2 threads; `pinned
--core N` runs one job at a time on core N with one thread and no lock, for a queue beside other
work on the other core (compare its rows only with each other: the neighbour's load varies). Every
group of jobs (a pair, or one alone run, with the untimed re-scoring after it) holds
/tmp/lila_timed.lock, and the machine load (/proc/loadavg) is written down at its start and end.
A row is a name of ROWS or `LABEL=BASE+KEY=VAL+KEY=VAL` (env overrides on top of row BASE).
`--regime steps --iterations N` is the untimed control: every run trains exactly N steps (the
warmdown then counts steps, which is what the wall-clock rule gives at a constant step time), two
at a time (`--nice` to yield to timed work), without the lock: quality per step, free of the load.

Scores: the official script scores ((N-1)//seq_len)*seq_len val targets (130,560 of the val head's
131,071 at seq 512); our rows are re-scored on that same truncated set (`lila_golf eval
--max-tokens`, the run's own artifact after the disk roundtrip) and also report every target.
Results are appended to benchmarks/results/parity.jsonl.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lila_golf.core.config import environment
from lila_golf.tools.bundle import build_file
from lila_golf.tools.records import parse_run_log

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_track import ROWS as CPU_TRACK_ROWS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "reference" / "official_baseline"
MINI = SHARED / "data" / "fineweb10B_sp1024_mini"
TOKENIZER = SHARED / "data" / "tokenizers" / "fineweb_1024_bpe.model"
LOCK = "/tmp/lila_timed.lock"
# the scale of the baseline for this machine (both scripts read these variables)
SCALE = dict(NUM_LAYERS="4", MODEL_DIM="256", TRAIN_SEQ_LEN="512", TRAIN_BATCH_TOKENS="8192", VAL_LOSS_EVERY="0")

# row -> (script, env); "official" runs the challenge's script, "ours" the bundled train_gpt.py
ROWS: dict[str, tuple[str, dict[str, str]]] = {
    "official": ("official", SCALE),
    "parity": ("ours", {"PRESET": "baseline", **SCALE}),
    # the CPU track's old `baseline` row (orthogonal init, 20-step lr warmup) at the same scale
    "old_baseline": ("ours", {"PRESET": "cpu_track", **CPU_TRACK_ROWS["baseline"], **SCALE}),
    "stack": ("ours", {"PRESET": "cpu_track", **CPU_TRACK_ROWS["stack"], "VAL_LOSS_EVERY": "0"}),
    "cpu_track": ("ours", {"PRESET": "cpu_track"}),
}

# Add-one ablation on top of the parity row (issue 14 item 4): one technique each, at settings scaled
# to a run of a few hundred steps (EMA decay 0.99 rather than the records' 0.997, which would average
# over most of such a run). `--rows @ablation` expands to all of them.
ABLATION: dict[str, dict[str, str]] = {
    "bigram": dict(BIGRAM_HASH_BUCKETS="2048", BIGRAM_DIM="128"),
    "smeargate": dict(SMEAR_GATE="1"),
    "xsa": dict(XSA_LAST_N="2"),
    "partial_rope": dict(ROPE_DIMS="16"),
    "ln_scale": dict(LN_SCALE="1"),
    "leaky_relu2": dict(ACTIVATION="leaky_relu2"),
    "value_residual": dict(VALUE_RESIDUAL="1"),
    "value_embed": dict(VALUE_EMBED_LAYERS="2,3"),
    "recurrence": dict(RECUR_LAYERS="1,2"),
    "ema": dict(EMA_DECAY="0.99"),
    "swa": dict(SWA_EVERY="5"),
    "muon_wd": dict(MUON_WEIGHT_DECAY="0.04"),
    "complement": dict(COMPLEMENT_ALPHA="0.5"),
    "shape_5x192": dict(NUM_LAYERS="5", MODEL_DIM="192", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="3"),
    "one_micro": dict(GRAD_ACCUM_TOTAL="1"),
    "batch_4k": dict(TRAIN_BATCH_TOKENS="4096"),
    "seq_256": dict(TRAIN_SEQ_LEN="256"),
    # the lr schedule: the official rule (WARMDOWN_ITERS=1200 by the clock) keeps the lr at
    # remaining / (1200 * step time), under 0.1 of its peak for a 300 s run at ~2.6 s a step;
    # this row decays linearly from the peak over the whole run instead
    "warmdown_clock": dict(WARMDOWN_FRAC="1.0"),
}
ROWS.update({name: ("ours", {**ROWS["parity"][1], **env}) for name, env in ABLATION.items()})
ROW_GROUPS = {"@ablation": list(ABLATION)}


def parse_row(spec: str) -> tuple[str, str, dict[str, str]]:
    """'parity', 'LABEL=BASE' or 'LABEL=BASE+KEY=VAL+...' -> (label, script, env)."""
    label, _, rest = spec.partition("=") if "=" in spec.split("+")[0] else (spec, "", spec)
    base, *overrides = rest.split("+")
    if base not in ROWS:
        raise SystemExit(f"row {spec!r}: {base!r} is not one of {sorted(ROWS)}")
    script, env = ROWS[base]
    for kv in overrides:
        key, eq, value = kv.partition("=")
        if not eq or not key.isupper():
            raise SystemExit(f"row {spec!r}: {kv!r} is not KEY=VALUE")
        env = {**env, key: value}
    return label or base, script, env


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def timed_lock():
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # the same lock as `flock /tmp/lila_timed.lock ...`
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def val_targets() -> int:
    header = np.fromfile(MINI / "fineweb_val_000000.bin", dtype="<i4", count=256)
    return int(header[2]) - 1


def prepare(job: dict, seconds: float, bundle: str) -> tuple[list[str], dict, Path]:
    """The run folder (script written into it: `bundle` for our rows, built once per invocation so
    that edits made while it runs do not leak into later jobs), the command and its env; `taskset`
    and threads are added by the caller."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in (run_dir / "train.log", run_dir / "logs" / "train.txt"):
        old.unlink(missing_ok=True)  # the official script appends to its log
    script = run_dir / "bench_script.py"  # not train_gpt.py: a broad `pkill -f train_gpt` elsewhere once ended runs
    env = {"DATA_PATH": str(MINI), "TOKENIZER_PATH": str(TOKENIZER), "SEED": str(job["seed"]),
           "MAX_WALLCLOCK_SECONDS": str(seconds), "RUN_ID": "train", **job["env"]}
    if job["script"] == "official" and job.get("cuda"):  # the original runs as it is on a GPU
        script.write_text((OFFICIAL / "train_gpt.py").read_text(encoding="utf-8"), encoding="utf-8")
    elif job["script"] == "official":
        subprocess.run([sys.executable, str(OFFICIAL / "cpu_patch.py"), str(script)], check=True)
        log = run_dir / "logs" / "train.txt"
    else:
        script.write_text(job.get("script_text") or bundle, encoding="utf-8")
        env.update(OUT_DIR=str(run_dir.parent), RUN_ID=run_dir.name)
        log = run_dir / "train.log"
    return [sys.executable, str(script)], env, log


def launch_group(jobs: list[dict], regime: str, seconds: float, bundle: str, nice: int = 0) -> None:
    """Run the jobs at once (together: pinned, 1 thread each; alone: one job, 2 threads; steps:
    untimed, 1 thread each, at `nice`)."""
    procs = []
    for job in jobs:
        cmd, env, log = prepare(job, seconds, bundle)
        threads = "2" if regime == "alone" else "1"
        if regime in ("together", "pinned"):
            cmd = ["taskset", "-c", str(job["core"])] + cmd
        elif regime == "steps":
            cmd = ["nice", "-n", str(nice)] + cmd
        env = {**environment(), **env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        job.update(threads=int(threads), log=str(log), command=" ".join(cmd))
        out = open(Path(job["run_dir"]) / "stdout.txt", "w")
        procs.append((subprocess.Popen(cmd, cwd=job["run_dir"], env=env, stdout=out, stderr=subprocess.STDOUT), out))
    for job, (proc, out) in zip(jobs, procs):
        job["status"] = proc.wait()
        out.close()


def rescore(job: dict, truncated: int) -> dict:
    """Our artifact re-scored on the official script's truncated target set (plain windows)."""
    cmd = [sys.executable, "-m", "lila_golf", "eval", job["run_dir"], "--stride", str(job["seq_len"]),
           "--max-tokens", str(truncated)]
    env = {**environment(), "OMP_NUM_THREADS": str(job["threads"])}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO).stdout
    m = re.search(r"^val_loss:(\S+) val_bpb:(\S+) tokens:(\d+)", out, re.M)
    if not m or int(m[3]) != truncated:
        raise RuntimeError(f"re-scoring {job['run_dir']} failed:\n{out[-2000:]}")
    return {"val_loss": float(m[1]), "val_bpb": float(m[2])}


def collect(job: dict, rescored: bool = True) -> None:
    """Figures of a finished job from its log (+ our rows re-scored on the truncated set, unless
    not `rescored`: rows compared only with each other, on all targets)."""
    run = parse_run_log(Path(job["log"]))
    if run.val_bpb is None:
        raise RuntimeError(f"{job['log']}: no final score (status {job['status']})")
    text = Path(job["log"]).read_text(errors="replace")
    batch = int(job["env"].get("TRAIN_BATCH_TOKENS") or run.config.get("train_batch_tokens") or 524288)
    job.update(steps=run.steps, train_time_ms=run.train_time_ms,
               tokens_per_s=run.steps * batch / (run.train_time_ms / 1000),
               model_params=int(re.search(r"model_params:(\d+)", text)[1]))
    truncated = val_targets() // job["seq_len"] * job["seq_len"]
    if job["script"] == "official":  # its score is already the truncated one
        job.update(val_bpb_trunc=float(run.val_bpb), val_loss_trunc=float(run.val_loss), val_bpb_all=None)
    else:
        res = rescore(job, truncated) if rescored else {"val_bpb": None, "val_loss": None}
        job.update(val_bpb_trunc=res["val_bpb"], val_loss_trunc=res["val_loss"], val_bpb_all=float(run.val_bpb),
                   float_val_bpb_all=float(run.float_val_bpb))
    job["targets_trunc"] = truncated


def seq_len_of(script: str, env: dict) -> int:
    if "TRAIN_SEQ_LEN" in env:
        return int(env["TRAIN_SEQ_LEN"])
    if script == "official":
        return 1024
    from lila_golf.core.config import Hyperparameters
    return Hyperparameters.from_env({"PRESET": env.get("PRESET", "smoke")}).train_seq_len


def plan(rows: list[str], seeds: list[int], regime: str, out: Path, tag: str, parallel: int = 2,
         by_row: bool = False, core: int = 0, overrides: dict[str, str] | None = None) -> list[list[dict]]:
    """Jobs seed by seed (rows interleaved), or row by row with every seed (`by_row`: a queue cut
    short still has whole rows), grouped in pairs (together) or singly (alone, pinned);
    `overrides` apply to every one of our rows."""
    jobs, rows = [], [r for spec in rows for r in ROW_GROUPS.get(spec, [spec])]
    order = [(spec, seed) for spec in rows for seed in seeds] if by_row else [(spec, seed) for seed in seeds for spec in rows]
    for spec, seed in order:
        label, script, env = parse_row(spec)
        if script == "ours":
            env = {**env, **(overrides or {})}
        jobs.append(dict(row=label, spec=spec, script=script, env=env, seed=seed, regime=regime, tag=tag,
                         seq_len=seq_len_of(script, env)))
    size = {"alone": 1, "together": 2, "pinned": 1}.get(regime, parallel)
    groups = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    for g, group in enumerate(groups):
        for j, job in enumerate(group):  # a row may come twice in a seed (more reference runs)
            job["core"] = (g + j) % 2 if regime == "together" else core if regime == "pinned" else None
            job["run_dir"] = str(out / tag / regime / f"{job['row']}_s{job['seed']}_g{g}{j}")
    return groups


def run(args) -> int:
    if (args.regime == "steps") != (args.iterations > 0):
        raise SystemExit("--regime steps goes with --iterations N (and only it)")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    groups = plan(args.rows, args.seeds, args.regime, Path(args.out).resolve(), args.tag, args.parallel,  # jobs run in their folder
                  args.by_row, args.core, overrides)
    bundle = build_file(None, False, False)
    if args.submitted:  # our rows run the file a record submits (packed, minified), built now
        from lila_golf.tools.demo import submission_file
        for job in (j for g in groups for j in g if j["script"] == "ours"):
            job.update(script_text=submission_file(job["env"]), submitted=True)
    if args.iterations:  # a fixed number of steps, no wall clock: the lr warmdown counts steps
        cuda = args.cuda and __import__("torch").cuda.is_available()
        for job in (j for g in groups for j in g):  # a row may set its own ITERATIONS
            job["env"] = {"ITERATIONS": str(args.iterations), **job["env"]}
            job.update(iterations=int(job["env"]["ITERATIONS"]), cuda=cuda,
                       regime=("cuda_" if cuda else "") + f"steps{args.iterations}")
        args.seconds = 0.0
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for group in groups:
        with timed_lock() if args.regime in ("together", "alone") else contextlib.nullcontext():
            start, t0 = loadavg(), time.time()
            launch_group(group, args.regime, args.seconds, bundle, args.nice)
            end = loadavg()
            for job in group:
                try:
                    collect(job, rescored=not args.no_rescore)
                except (RuntimeError, OSError, TypeError, ValueError) as exc:  # keep the group's other results
                    job["error"] = str(exc)[-2000:]
                    print(f"{job['row']} s{job['seed']}: FAILED {job['error']}", flush=True)
                job.update(load_start=start, load_end=end, started=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)),
                           wall_s=round(time.time() - t0), seconds=args.seconds,
                           pair=[j["row"] for j in group if j is not job])
        with open(results, "a") as f:
            for job in group:
                f.write(json.dumps({k: v for k, v in job.items() if k != "script_text"}) + "\n")
        for job in (j for j in group if "error" not in j):
            trunc = "n/a" if job["val_bpb_trunc"] is None else f"{job['val_bpb_trunc']:.4f}"
            print(f"{job['regime']} {job['row']} s{job['seed']} core:{job['core']} val_bpb_trunc:{trunc} "
                  f"val_bpb_all:{job['val_bpb_all'] or float('nan'):.4f} "
                  f"steps:{job['steps']} tok/s:{job['tokens_per_s']:.0f} load:{job['load_start']} -> {job['load_end']}", flush=True)
    return 0


def welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def report(args) -> int:
    lines = [json.loads(l) for l in Path(args.results).read_text().splitlines() if l.strip()]
    key = "val_bpb_all" if args.score == "all" else "val_bpb_trunc"
    jobs = [j for j in lines if j["tag"] in args.tag and "error" not in j and j.get(key) is not None
            and (args.regime is None or j["regime"] == args.regime)]
    for regime in sorted({j["regime"] for j in jobs}):
        rj = [j for j in jobs if j["regime"] == regime]
        print(f"\n#### {regime} (tag {' '.join(args.tag)})\n")
        print("| row | seed | val_bpb, official's targets | val_bpb, all targets | steps | tokens/s | core | load start -> end |")
        print("|---|---|---|---|---|---|---|---|")
        for j in sorted(rj, key=lambda j: (j["seed"], j["started"])):
            allt = f"{j['val_bpb_all']:.4f}" if j.get("val_bpb_all") else "n/a"
            trunc = f"{j['val_bpb_trunc']:.4f}" if j.get("val_bpb_trunc") else "n/a"
            print(f"| {j['row']} | {j['seed']} | {trunc} | {allt} | {j['steps']} | {j['tokens_per_s']:.0f} | "
                  f"{j['core'] if j['core'] is not None else 'both'} | {j['load_start']} -> {j['load_end']} |")
        print_summary(rj, args.ref, key)
    return 0


def print_summary(jobs: list[dict], ref: str, key: str = "val_bpb_trunc") -> None:
    ref_bpb = [j[key] for j in jobs if j["row"] == ref]
    ref_tps = [j["tokens_per_s"] for j in jobs if j["row"] == ref]
    scored = "official's targets" if key == "val_bpb_trunc" else "all targets"
    print(f"\n| row | seeds | mean val_bpb ({scored}) | std | mean, all targets | vs {ref} | ratio | "
          f"Welch p | steps | tokens/s | tokens/s ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in dict.fromkeys(j["row"] for j in jobs):
        rs = [j for j in jobs if j["row"] == row]
        bpb = [j[key] for j in rs]
        std = f"{statistics.stdev(bpb):.4f}" if len(bpb) > 1 else "n/a"
        alls = [j["val_bpb_all"] for j in rs if j.get("val_bpb_all")]
        mean_all = f"{statistics.mean(alls):.4f}" if alls else "n/a"
        tps = statistics.mean(j["tokens_per_s"] for j in rs)
        if ref_bpb and row != ref:
            p = welch_p(bpb, ref_bpb)
            delta = f"{statistics.mean(bpb) - statistics.mean(ref_bpb):+.4f}"
            ratio = f"{statistics.mean(bpb) / statistics.mean(ref_bpb):.3f}"
            pv, tr = ("n/a" if p is None else f"{p:.3g}"), f"{tps / statistics.mean(ref_tps):.3f}"
        else:
            delta = ratio = pv = tr = ""
        print(f"| {row} | {len(rs)} | {statistics.mean(bpb):.4f} | {std} | {mean_all} | {delta} | {ratio} | {pv} | "
              f"{statistics.mean(j['steps'] for j in rs):.0f} | {tps:.0f} | {tr} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--regime", choices=("together", "alone", "steps", "pinned"), required=True)
    r.add_argument("--core", type=int, default=0, help="regime pinned: the core of the queue")
    r.add_argument("--by-row", action="store_true", help="every seed of a row before the next row")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VAL", help="env overrides for every one of our rows")
    r.add_argument("--no-rescore", action="store_true",
                   help="our rows keep only their own all-target score (rows compared with each other only)")
    r.add_argument("--iterations", type=int, default=0, help="regime steps: train exactly N steps (untimed, no lock)")
    r.add_argument("--nice", type=int, default=0, help="regime steps: CPU priority of the runs")
    r.add_argument("--parallel", type=int, default=2, help="regime steps: runs at once")
    r.add_argument("--cuda", action="store_true", help="regime steps on a GPU: the official script unpatched "
                   "(bf16, torch.compile), ours with bf16 autocast; labelled cuda_stepsN")
    r.add_argument("--data", help="dataset folder (default: ../shared/data/fineweb10B_sp1024_mini)")
    r.add_argument("--tokenizer", help="tokenizer .model (default: ../shared/data/tokenizers/fineweb_1024_bpe.model)")
    r.add_argument("--official", help="folder of the official script and cpu_patch.py (default: ../shared/reference/official_baseline)")
    r.add_argument("--rows", nargs="+", default=["official", "parity"])
    r.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    r.add_argument("--seconds", type=float, default=600.0)
    r.add_argument("--submitted", action="store_true",
                   help="our rows run the file a record submits (the preset's record file, packed and minified)")
    r.add_argument("--tag", required=True, help="names this experiment in the results file")
    r.add_argument("--out", default=str(REPO / "runs" / "parity"))
    q = sub.add_parser("report")
    q.add_argument("--tag", nargs="+", required=True, help="one or more tags, pooled")
    q.add_argument("--regime", help="together, alone or stepsN")
    q.add_argument("--ref", default="official")
    q.add_argument("--score", choices=("trunc", "all"), default="trunc",
                   help="compare on the official script's truncated targets, or on all targets (our rows only)")
    for sp in (r, q):
        sp.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "parity.jsonl"))
    args = p.parse_args(argv)
    for name, value in (("MINI", getattr(args, "data", None)), ("TOKENIZER", getattr(args, "tokenizer", None)),
                        ("OFFICIAL", getattr(args, "official", None))):
        if value:
            globals()[name] = Path(value).resolve()
    return run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
