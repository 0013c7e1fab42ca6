"""Record folders: measure, create, verify and compare them (a tool; not bundled into train_gpt.py).

    python -m lila_golf size runs/my_run                        # exit 1 over 16,000,000 bytes
    python -m lila_golf size train_gpt.py final_model.int8.zlib.lgz
    python -m lila_golf record runs/s1337 runs/s42 runs/s7 --name "CPU baseline" \\
        --track track_cpu_10min --author "A. Person" --github-id aperson --blurb "..."
    python -m lila_golf verify records/track_cpu_10min/2026-05-01_CPU_baseline [--against OLD_RECORD]
    python -m lila_golf compare runs/a runs/b records/track_cpu_10min/2026-05-01_CPU_baseline

A record is `records/<track>/<YYYY-MM-DD>_<Name>/` holding README.md, submission.json, the exact
train_gpt.py that ran (its sha256 equals every log's `code_sha256`), requirements.txt,
loss_curve.png, and per seed `train_seed<S>.log` + `final_model_seed<S>.<scheme>.<codec>.lgz`.
Every number in submission.json is copied from the logs at their precision (8 decimals); `verify`
recomputes each from the logs and measures bytes from the files. Folders in the official challenge
format (openai/parameter-golf: logs without code hash, no model file) verify with the model bytes
read from the log (labelled "read") and the hash check "n/a".
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import re
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

ARTIFACT_LIMIT_BYTES = 16_000_000  # the challenge's cap (decimal bytes), as lila_golf.train logs it
MIN_IMPROVEMENT_NATS = 0.005  # a new record must beat the previous by this much val_loss
SIGNIFICANCE_P = 0.01  # the challenge's written bar for that improvement
CODE_NAME = "train_gpt.py"
EIGHT_DECIMALS = Decimal("1e-8")
# config keys that may differ between the seeds of one record
PER_SEED_KEYS = {"seed", "run_id", "out_dir", "data_path", "tokenizer_path"}
LILA_REQUIRED_FILES = ("README.md", "submission.json", CODE_NAME, "requirements.txt")
OFFICIAL_REQUIRED_FILES = ("README.md", "submission.json", CODE_NAME)
SUBMISSION_FIELDS = ("author", "github_id", "name", "blurb", "date", "val_loss", "val_bpb",
                     "bytes_total", "bytes_code")
LILA_SUBMISSION_FIELDS = SUBMISSION_FIELDS + ("track", "seeds", "seed_results", "val_bpb_std",
                                              "hardware", "compliance", "code_sha256")


@dataclass(frozen=True)
class TrackRules:
    train_s: float | None  # wall-clock limit of training (None = no limit)
    eval_s: float | None  # wall-clock limit of evaluation
    hardware: str


TRACKS = {
    "track_10min_16mb": TrackRules(600, 600, "8xH100 SXM"),
    "track_cpu_10min": TrackRules(600, 600, "2 CPU cores"),
    "track_non_record_16mb": TrackRules(None, None, "any"),
}


class RecordError(ValueError):
    """A run or record folder that cannot be measured, recorded or read; the message names it."""


# ----------------------------------------------------------------------------- log parsing

@dataclass
class SeedRun:
    """What one training log says. Numbers stay the strings the log printed (full precision)."""
    log_path: Path
    format: str  # "lila" (lila_golf.train) | "official" (openai/parameter-golf records)
    seed: str | None = None
    val_loss: str | None = None
    val_bpb: str | None = None
    score_key: str | None = None  # e.g. final_int8_zlib_roundtrip
    steps: int | None = None
    train_time_ms: float | None = None
    last_step_start_ms: float | None = None  # logged by lila_golf.train since it was added
    eval_time_ms: float | None = None
    bytes_code: int | None = None  # as logged
    bytes_model: int | None = None  # as logged
    bytes_total: int | None = None  # as logged
    code_sha256: str | None = None
    artifact_valid: bool | None = None
    config: dict[str, str] = field(default_factory=dict)
    device: str = ""
    versions: str = ""
    val_subset: str | None = None
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)


def _tokens(words: list[str]) -> dict[str, str]:
    return dict(w.partition(":")[::2] for w in words if ":" in w)


def _ms(value: str) -> float:
    return float(value[:-2] if value.endswith("ms") else value)


def _step_of(value: str) -> int:
    return int(value.split("/")[0])


def _parse_lila_line(run: SeedRun, line: str) -> None:
    words = line.split()
    if not words:
        return
    head, tok = words[0], _tokens(words)
    if head.startswith("code_sha256:"):
        run.code_sha256, run.bytes_code = tok["code_sha256"], int(tok.get("bytes_code", -1))
    elif head.startswith("python:"):
        run.versions = line.strip()
    elif head.startswith("device:"):
        run.device = line.strip()
    elif head == "config":
        run.config = _tokens(words[1:])
        run.seed = run.config.get("seed")
    elif head.startswith("val_subset:"):
        run.val_subset = tok["val_subset"]
    elif head.startswith("step:") and "train_loss" in tok:
        run.train_curve.append((_step_of(tok["step"]), float(tok["train_loss"])))
    elif head.startswith("step:") and "val_loss" in tok:
        run.val_curve.append((_step_of(tok["step"]), float(tok["val_loss"])))
    elif head.startswith("train_steps:"):
        run.steps, run.train_time_ms = int(tok["train_steps"]), float(tok["train_time_ms"])
        if "last_step_start_ms" in tok:
            run.last_step_start_ms = float(tok["last_step_start_ms"])
    elif head.startswith("final_") and head.endswith("_roundtrip"):
        run.score_key, run.val_loss, run.val_bpb = head, tok.get("val_loss"), tok.get("val_bpb")
        run.eval_time_ms = _ms(tok["eval_time"]) if "eval_time" in tok else None
    elif head.startswith("bytes_code:"):
        run.bytes_code, run.bytes_model = int(tok["bytes_code"]), int(tok["bytes_model"])
        run.bytes_total = int(tok["bytes_total"])
    elif head.startswith("artifact_valid:"):
        run.artifact_valid = tok["artifact_valid"] == "true"


def parse_lila_log(path: Path) -> SeedRun:
    """A log written by lila_golf.train (first line `code_sha256:...`); later lines win."""
    run = SeedRun(Path(path), "lila")
    for line in _read_text(path).splitlines():
        _parse_lila_line(run, line)
    return run


# official logs (openai/parameter-golf train_gpt.py): free-form lines, some `key:value`, some
# `key: value`; the score is `final_<q>_roundtrip_exact val_loss:X val_bpb:Y` in early records and
# the last `<name> val_loss:X val_bpb:Y` line (e.g. quantized_ttt) in later ones
_OFFICIAL_SCORE = re.compile(r"^([A-Za-z][\w.+-]*) val_loss:\s*([0-9.]+) val_bpb:\s*([0-9.]+)")
_OFFICIAL_MODEL = re.compile(r"^Serialized model (\S+): (\d+) bytes")
_OFFICIAL_TOTAL = re.compile(r"^Total submission size (\S+): (\d+) bytes")
_OFFICIAL_CODE = re.compile(r"^Code size: (\d+) bytes")
_OFFICIAL_STOP = re.compile(r"^stopping_early: \S+ train_time:\s*(\d+)ms step:\s*(\d+)/")
_OFFICIAL_STEP = re.compile(r"^step:(\d+)/\d+ (train_loss|val_loss):\s*([0-9.]+).*?train_time:\s*(\d+)ms")
_OFFICIAL_SEED = re.compile(r"^seed[:=]\s*(\d+)\s*$")
_OFFICIAL_EVAL = re.compile(r"eval_time:\s*(\d+)ms")


def _parse_official_line(run: SeedRun, line: str, scores: list) -> None:
    line = line.strip()
    if m := _OFFICIAL_STEP.match(line):
        step, kind, value, t = int(m[1]), m[2], float(m[3]), float(m[4])
        (run.train_curve if kind == "train_loss" else run.val_curve).append((step, value))
        run.steps, run.train_time_ms = step, t
    elif m := _OFFICIAL_STOP.match(line):
        run.train_time_ms, run.steps = float(m[1]), int(m[2])
    elif m := _OFFICIAL_SCORE.match(line):
        if not m[1].startswith(("pre-quant", "step")):
            scores.append((m[1], m[2], m[3]))
    elif m := _OFFICIAL_MODEL.match(line):
        run.bytes_model = int(m[2])
    elif m := _OFFICIAL_TOTAL.match(line):
        run.bytes_total = int(m[2])
    elif m := _OFFICIAL_CODE.match(line):
        run.bytes_code = int(m[1])
    elif m := _OFFICIAL_SEED.match(line):
        run.seed = m[1]
    if (m := _OFFICIAL_EVAL.search(line)) and not line.startswith("step:"):
        run.eval_time_ms = float(m[1])


def parse_official_log(path: Path) -> SeedRun:
    """A log in the official challenge format; the score line is the last `*_exact` one if any,
    else the last `<name> val_loss:.. val_bpb:..` line after training."""
    run, scores = SeedRun(Path(path), "official"), []
    for line in _read_text(path).splitlines():
        _parse_official_line(run, line, scores)
    exact = [s for s in scores if s[0].endswith("_exact")]
    if scores:
        run.score_key, run.val_loss, run.val_bpb = (exact or scores)[-1]
    if run.seed is None and (m := re.search(r"seed_?(\d+)", Path(path).stem)):
        run.seed = m[1]
    return run


def parse_run_log(path: Path) -> SeedRun:
    """Parse a training log of either format (lila logs start with `code_sha256:`)."""
    text = _read_text(path)
    first = next((l for l in text.splitlines() if l.strip()), "")
    return parse_lila_log(path) if first.startswith("code_sha256:") else parse_official_log(path)


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror})") from None


# ----------------------------------------------------------------------------- numbers

def mean8(values: list[str]) -> Decimal:
    """Mean of logged decimals, exact, then rounded to 8 decimals (half-even)."""
    return (sum(Decimal(v) for v in values) / len(values)).quantize(EIGHT_DECIMALS, ROUND_HALF_EVEN)


def std8(values: list[str]) -> Decimal:
    """Sample standard deviation (n-1) of logged decimals at 8 decimals; 0 for one seed."""
    if len(values) < 2:
        return Decimal(0).quantize(EIGHT_DECIMALS)
    return statistics.stdev([Decimal(v) for v in values]).quantize(EIGHT_DECIMALS, ROUND_HALF_EVEN)


def _max_or_none(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class WelchResult:
    improvement: float  # mean(previous) - mean(new), nats per token
    t: float
    df: float
    p_value: float


def welch_improvement_test(new_losses: list[float], previous_losses: list[float],
                           min_improvement: float = MIN_IMPROVEMENT_NATS) -> WelchResult:
    """Welch's one-sided t-test of H1: mean(previous) - mean(new) > min_improvement (unequal
    variances, Welch-Satterthwaite degrees of freedom). Needs at least 2 values on each side."""
    from scipy import stats

    if len(new_losses) < 2 or len(previous_losses) < 2:
        raise RecordError(f"Welch's test needs at least 2 seeds on each side, got {len(new_losses)} new "
                          f"and {len(previous_losses)} previous")
    improvement = statistics.fmean(previous_losses) - statistics.fmean(new_losses)
    va, vb = statistics.variance(previous_losses), statistics.variance(new_losses)
    se2 = va / len(previous_losses) + vb / len(new_losses)
    if se2 == 0:  # identical values on both sides: the difference is exact
        gap = improvement - min_improvement
        return WelchResult(improvement, math.copysign(math.inf, gap), math.inf, 0.0 if gap > 0 else 1.0)
    res = stats.ttest_ind(previous_losses, [x + min_improvement for x in new_losses],
                          equal_var=False, alternative="greater")
    df = se2 ** 2 / ((va / len(previous_losses)) ** 2 / (len(previous_losses) - 1)
                     + (vb / len(new_losses)) ** 2 / (len(new_losses) - 1))
    return WelchResult(improvement, float(res.statistic), df, float(res.pvalue))


# ----------------------------------------------------------------------------- size

@dataclass
class SizeReport:
    code_path: Path
    bytes_code: int
    bytes_model: int
    model_source: str  # the artifact's path, or "read from <log>" for official folders

    @property
    def bytes_total(self) -> int:
        return self.bytes_code + self.bytes_model

    def line(self) -> str:
        return (f"bytes_code:{self.bytes_code} bytes_model:{self.bytes_model} "
                f"bytes_total:{self.bytes_total} limit:{ARTIFACT_LIMIT_BYTES}")


def record_logs(folder: Path) -> list[Path]:
    """Training logs of a run or record folder: train.log / train_seed*.log / *.log, logs/*.{log,txt}."""
    logs = sorted(p for p in folder.glob("*.log") if p.is_file())
    logs += sorted(p for p in folder.glob("logs/*") if p.suffix in (".log", ".txt") and p.is_file())
    return logs


def _model_from_logs(folder: Path) -> tuple[int, str]:
    """Largest model size read from the logs (official folders carry no model file)."""
    sizes = [(run.bytes_model, run.log_path.name) for run in map(parse_run_log, record_logs(folder))
             if run.bytes_model is not None]
    if not sizes:
        raise RecordError(f"{folder}: no model file (*.lgz) and no log line giving the model size")
    size, name = max(sizes)
    return size, f"read from {name}"


def measure_size(paths: list[Path]) -> SizeReport:
    """Bytes of the code file that runs + the model: a run/record folder (largest artifact of its
    seeds), or CODE MODEL files. Official folders: model bytes read from the log."""
    paths = [Path(p) for p in paths]
    if len(paths) == 2:
        code, model = sorted(paths, key=lambda p: p.suffix != ".py")
        for p in (code, model):
            if not p.is_file():
                raise RecordError(f"{p}: no such file")
        return SizeReport(code, code.stat().st_size, model.stat().st_size, str(model))
    if len(paths) != 1 or not paths[0].is_dir():
        raise RecordError(f"give a run/record folder, or the code file and the model file (got {' '.join(map(str, paths))})")
    folder = paths[0]
    code = folder / CODE_NAME
    if not code.is_file():
        raise RecordError(f"{folder}: no {CODE_NAME} (the file that runs); runs launched outside "
                          f"`python -m lila_golf train/demo` lack it: give CODE MODEL files instead")
    models = sorted(folder.glob("*.lgz"), key=lambda p: (p.stat().st_size, p.name))
    if models:
        return SizeReport(code, code.stat().st_size, models[-1].stat().st_size, str(models[-1]))
    size, source = _model_from_logs(folder)
    return SizeReport(code, code.stat().st_size, size, source)


def run_size(args) -> int:
    """`size PATH...`: print the byte line; exit 0 within the limit, 1 over it, 2 on bad input."""
    try:
        report = measure_size(args.paths)
    except RecordError as exc:
        print(f"size: {exc}", file=sys.stderr)
        return 2
    print(f"code:{report.code_path} model:{report.model_source.replace(' ', '_')}")
    print(report.line())
    if report.bytes_total > ARTIFACT_LIMIT_BYTES:
        print(f"over_limit_by:{report.bytes_total - ARTIFACT_LIMIT_BYTES}")
        return 1
    return 0


# ----------------------------------------------------------------------------- record

@dataclass
class RecordedRun:
    run: SeedRun
    code: Path
    artifact: Path


def _collect_run(run_dir: Path, code_override: Path | None) -> RecordedRun:
    """A finished run folder, checked: complete log, valid artifact of the logged size, code hash."""
    run_dir = Path(run_dir)
    log = run_dir / "train.log"
    if not log.is_file():
        raise RecordError(f"{run_dir}: no train.log (not a run folder)")
    run = parse_run_log(log)
    if run.format != "lila":
        raise RecordError(f"{log}: not a lila_golf log (no code_sha256 line)")
    if run.val_loss is None or run.steps is None or run.bytes_model is None:
        raise RecordError(f"{log}: the run did not finish (no train_steps / final roundtrip / bytes line)")
    if not run.artifact_valid:
        raise RecordError(f"{log}: artifact_valid is not true (over {ARTIFACT_LIMIT_BYTES:,} bytes?)")
    if run.seed is None:
        raise RecordError(f"{log}: no seed in the config line")
    artifact = run_dir / f"final_model.{run.config.get('quant_scheme')}.{run.config.get('codec')}.lgz"
    if not artifact.is_file():
        raise RecordError(f"{run_dir}: artifact {artifact.name} named by the log's config is missing")
    if artifact.stat().st_size != run.bytes_model:
        raise RecordError(f"{artifact}: {artifact.stat().st_size} bytes, but the log says bytes_model:{run.bytes_model} "
                          f"(the file changed after the run)")
    code = Path(code_override) if code_override else run_dir / CODE_NAME
    if not code.is_file():
        raise RecordError(f"{run_dir}: no {CODE_NAME} (launch with `python -m lila_golf train`, or pass --code)")
    digest = sha256_file(code)
    if digest != run.code_sha256:
        raise RecordError(f"{code}: sha256 {digest} differs from the code_sha256 {run.code_sha256} in {log}: "
                          f"this is not the code that ran")
    return RecordedRun(run, code, artifact)


def _check_seeds_agree(runs: list[RecordedRun]) -> None:
    """One record = one code and one config; only the seed (and paths) may change."""
    seeds = [r.run.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise RecordError(f"duplicate seeds {seeds}: each seed must be a separate, distinct run")
    base = runs[0]
    for r in runs[1:]:
        if r.run.code_sha256 != base.run.code_sha256:
            raise RecordError(f"code differs between seeds: {base.run.log_path} ran {base.run.code_sha256}, "
                              f"{r.run.log_path} ran {r.run.code_sha256}")
        diff = sorted(k for k in set(base.run.config) | set(r.run.config)
                      if k not in PER_SEED_KEYS and base.run.config.get(k) != r.run.config.get(k))
        if diff:
            raise RecordError(f"config differs between {base.run.log_path} and {r.run.log_path}: {', '.join(diff)}")


def train_time_within(run: SeedRun, limit_s: float | None) -> bool:
    """Training is within the cap when it ends by it, or when it stopped at the wall-clock cap and
    its last step began before the cap (both trainers test the clock between steps, so the log
    overshoots by under one step: the official baseline logs 600,038 ms). The last step's start is
    read from the log (`last_step_start_ms`) when present; older logs only give the mean step time,
    and a single step can run longer than the mean, so they are allowed 1.5 mean steps."""
    if limit_s is None:
        return True
    if run.train_time_ms is None:
        return False
    if run.train_time_ms <= 1000 * limit_s:
        return True
    if run.last_step_start_ms is not None:
        return run.last_step_start_ms < 1000 * limit_s
    mean_step_ms = run.train_time_ms / run.steps if run.steps else 0.0
    return run.train_time_ms - 1.5 * mean_step_ms < 1000 * limit_s


def _limit_problems(run: SeedRun, rules: TrackRules) -> list[str]:
    """What breaks the track's time limits in one log (empty when nothing does)."""
    bad = []
    if run.train_time_ms is None or run.eval_time_ms is None:
        bad.append(f"{run.log_path.name}: no {'train' if run.train_time_ms is None else 'eval'} time in the log")
    if run.train_time_ms is not None and not train_time_within(run, rules.train_s):
        bad.append(f"{run.log_path.name}: train {run.train_time_ms / 1000:.1f} s > {rules.train_s:.0f} s")
    if run.eval_time_ms is not None and rules.eval_s is not None and run.eval_time_ms > 1000 * rules.eval_s:
        bad.append(f"{run.log_path.name}: eval {run.eval_time_ms / 1000:.1f} s > {rules.eval_s:.0f} s")
    return bad


def _check_track_limits(runs: list[RecordedRun], track: str) -> None:
    for r in runs:
        if bad := _limit_problems(r.run, TRACKS[track]):
            raise RecordError(f"over the {track} time limits: " + "; ".join(bad))


def _hardware(run: SeedRun) -> str:
    tok = _tokens(run.device.split())
    return (f"{tok.get('device', '?')} {tok.get('device_name', '?')}, "
            f"world_size {tok.get('world_size', '?')}, {tok.get('threads', '?')} threads")


def _seed_key(seed: str):
    return int(seed) if seed.isdigit() else seed


def build_submission(runs: list[RecordedRun], *, name, track, author, github_id, blurb, date,
                     names: dict[str, tuple[str, str]]) -> dict:
    """submission.json: the challenge's fields + per-seed results, all copied from the logs."""
    code_bytes = runs[0].code.stat().st_size
    losses, bpbs = [r.run.val_loss for r in runs], [r.run.val_bpb for r in runs]
    seed_results = {}
    for r in runs:
        log_name, artifact_name = names[r.run.seed]
        seed_results[r.run.seed] = {
            "val_loss": float(Decimal(r.run.val_loss)), "val_bpb": float(Decimal(r.run.val_bpb)),
            "steps": r.run.steps, "train_time_ms": r.run.train_time_ms, "eval_time_ms": r.run.eval_time_ms,
            "bytes_model": r.run.bytes_model, "bytes_total": code_bytes + r.run.bytes_model,
            "log": log_name, "artifact": artifact_name, "artifact_sha256": sha256_file(r.artifact)}
    rules = TRACKS[track]
    bytes_total = max(v["bytes_total"] for v in seed_results.values())
    return {
        "author": author, "github_id": github_id, "name": name, "blurb": blurb, "date": date,
        "track": track, "val_loss": float(mean8(losses)), "val_bpb": float(mean8(bpbs)),
        "bytes_total": bytes_total, "bytes_code": code_bytes,
        "val_loss_std": float(std8(losses)), "val_bpb_std": float(std8(bpbs)),
        "seeds": [_seed_key(r.run.seed) for r in runs], "seed_results": seed_results,
        "score_key": runs[0].run.score_key, "code_sha256": runs[0].run.code_sha256,
        "hardware": _hardware(runs[0].run), "software": runs[0].run.versions,
        "compliance": {
            "train_under_limit": all(train_time_within(r.run, rules.train_s) for r in runs),
            "eval_under_limit": rules.eval_s is None or all(r.run.eval_time_ms <= 1000 * rules.eval_s for r in runs),
            "limits_s": {"train": rules.train_s, "eval": rules.eval_s},
            "artifact_under_16mb": bytes_total <= ARTIFACT_LIMIT_BYTES,
            "code_hash_matches_logs": True,
            "full_val_set": all(r.run.val_subset is None for r in runs),
            "seed_count": len(runs)},
    }


def plot_loss_curves(runs: list[SeedRun], out: Path, title: str) -> None:
    """Train loss per step (lines), periodic val loss (markers) and final roundtrip val_loss (stars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        color = None
        if run.train_curve:
            color = ax.plot(*zip(*run.train_curve), lw=1, label=f"seed {run.seed} train")[0].get_color()
        if run.val_curve:
            ax.plot(*zip(*run.val_curve), "o", color=color, ms=4, label=f"seed {run.seed} val")
        if run.val_loss is not None and run.steps is not None:
            ax.plot([run.steps], [float(run.val_loss)], "*", color=color, ms=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title + "  (stars: final roundtrip val_loss)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def reproduce_env(run: SeedRun) -> dict[str, str]:
    """Env vars that rebuild this run's config: PRESET + every field differing from the preset.
    Checked by rebuilding the config; when the package's presets have drifted, every field."""
    from .config import Hyperparameters

    cfg = run.config
    fixed = {"PRESET": cfg.get("preset", "smoke"), "SEED": cfg.get("seed", "1337"),
             "RUN_ID": f"seed{cfg.get('seed')}", "DATA_PATH": cfg.get("data_path", ""),
             "TOKENIZER_PATH": cfg.get("tokenizer_path", "")}
    try:
        base = {k: str(v) for k, v in Hyperparameters.from_env(fixed).as_dict().items()}
    except ValueError:
        base = {}
    env = dict(fixed)
    free = ("preset", "run_id", "out_dir")  # where the output goes is the reproducer's choice
    env.update({k.upper(): v for k, v in cfg.items() if k not in free and base.get(k) != v})
    try:
        rebuilt = {k: str(v) for k, v in Hyperparameters.from_env(env).as_dict().items()}
    except ValueError:
        rebuilt = {}
    if any(rebuilt.get(k) != v for k, v in cfg.items() if k not in free):
        env = {**fixed, **{k.upper(): v for k, v in cfg.items() if k not in free}}
    return env


def _command(run: SeedRun) -> str:
    env = " ".join(f"{k}={_shell_quote(v)}" for k, v in reproduce_env(run).items())
    world = _tokens(run.device.split()).get("world_size", "1")
    launcher = "python" if world == "1" else f"torchrun --standalone --nproc_per_node={world}"
    return f"{env} {launcher} {CODE_NAME}"


def _shell_quote(value: str) -> str:
    return value if re.fullmatch(r"[\w./:,+=@-]+", value) else "'" + value.replace("'", "'\\''") + "'"


def _results_table(sub: dict) -> list[str]:
    rows = ["| seed | val_loss | val_bpb | steps | train time (s) | eval time (s) | bytes_model | bytes_total |",
            "|---|---|---|---|---|---|---|---|"]
    for seed, r in sub["seed_results"].items():
        rows.append(f"| {seed} | {r['val_loss']:.8f} | {r['val_bpb']:.8f} | {r['steps']} | "
                    f"{r['train_time_ms'] / 1000:.1f} | {r['eval_time_ms'] / 1000:.1f} | "
                    f"{r['bytes_model']:,} | {r['bytes_total']:,} |")
    rows.append(f"| **mean** | **{sub['val_loss']:.8f}** | **{sub['val_bpb']:.8f}** | | | | | max {sub['bytes_total']:,} |")
    rows.append(f"| std (n-1) | {sub['val_loss_std']:.8f} | {sub['val_bpb_std']:.8f} | | | | | |")
    return rows


def build_readme(sub: dict, runs: list[RecordedRun]) -> str:
    """README.md: what was measured, on what, per seed, the config and the commands to reproduce."""
    first = runs[0].run
    rules = TRACKS[sub["track"]]
    val_note = ("the full validation set" if sub["compliance"]["full_val_set"] else
                f"ONLY `{first.val_subset}` of the validation set (NOT the full val set: "
                f"not comparable to challenge scores)")
    limits = (f"training {rules.train_s:.0f} s, evaluation {rules.eval_s:.0f} s" if rules.train_s else "no time limit")
    lines = [f"# {sub['name']}", "", sub["blurb"] or "", "",
             f"Track `{sub['track']}` (limits: {limits}, artifact {ARTIFACT_LIMIT_BYTES:,} bytes).",
             f"Measured on: {sub['hardware']} ({sub['software']}).",
             f"Author: {sub['author']} ({sub['github_id']}). Created {sub['date']} by `python -m lila_golf record`.",
             "", "## Results", "",
             f"Score: the `{sub['score_key']}` line of each log: the model reloaded from its artifact on "
             f"disk and re-evaluated on {val_note}.", "", *_results_table(sub), "",
             f"bytes_total = `{CODE_NAME}` ({sub['bytes_code']:,} bytes) + the seed's artifact; the record's "
             f"figure is the largest over seeds. Code sha256 `{sub['code_sha256']}` (equal in every log).",
             "", "![loss curves](loss_curve.png)", "", "## Config", "",
             "Identical for every seed apart from `seed`, `run_id`, `out_dir` and data paths:", "", "```",
             *(f"{k}:{v}" for k, v in first.config.items() if k not in PER_SEED_KEYS), "```", "",
             "## Reproduce", "",
             f"From inside this folder, with the data at the paths below (or your own copy of them):", "", "```bash",
             *(_command(r.run) for r in runs), "```", "",
             "Check the folder (hashes, numbers, sizes, time limits):", "", "```bash",
             "python -m lila_golf verify .", "```", "", "## Files", "",
             f"- `{CODE_NAME}`: the exact file that ran; `requirements.txt`: the Python packages.",
             *(f"- `{v['log']}`, `{v['artifact']}`: seed {s}'s log and model artifact"
               for s, v in sub["seed_results"].items()),
             "- `submission.json`: the figures above, as the logs print them (8 decimals).", ""]
    return "\n".join(lines)


def _requirements_text() -> str:
    """The repository's requirements.txt without the editable install of the package itself (the
    record runs from its own train_gpt.py)."""
    src = Path(__file__).resolve().parent.parent / "requirements.txt"
    if not src.is_file():
        raise RecordError(f"{src}: the repository's requirements.txt is missing")
    lines = [l for l in src.read_text(encoding="utf-8").splitlines() if not l.strip().startswith("-e")]
    return "\n".join(lines) + "\n"


def folder_name(date: str, name: str) -> str:
    """`<date>_<Name>` with anything but letters, digits, '.' and '-' turned into '_'."""
    return f"{date}_{re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_')}"


def create_record(run_dirs: list[Path], *, name: str, track: str, author: str = "", github_id: str = "",
                  blurb: str = "", out: Path = Path("records"), date: str | None = None,
                  code: Path | None = None) -> Path:
    """Build records/<track>/<date>_<Name>/ from finished run folders (one per seed). Refuses runs
    whose code hash, config or limits do not hold; the folder appears complete or not at all."""
    if track not in TRACKS:
        raise RecordError(f"unknown track {track!r}: expected one of {', '.join(TRACKS)}")
    if not run_dirs:
        raise RecordError("give at least one run folder")
    date = date or datetime.date.today().isoformat()
    runs = sorted((_collect_run(d, code) for d in run_dirs), key=lambda r: _seed_key(r.run.seed))
    _check_seeds_agree(runs)
    _check_track_limits(runs, track)
    dest = Path(out) / track / folder_name(date, name)
    if dest.exists():
        raise RecordError(f"{dest} already exists: a record is never overwritten")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = {}
    for r in runs:
        cfg = r.run.config
        names[r.run.seed] = (f"train_seed{r.run.seed}.log",
                             f"final_model_seed{r.run.seed}.{cfg['quant_scheme']}.{cfg['codec']}.lgz")
        shutil.copyfile(r.run.log_path, tmp / names[r.run.seed][0])
        shutil.copyfile(r.artifact, tmp / names[r.run.seed][1])
    shutil.copyfile(runs[0].code, tmp / CODE_NAME)
    (tmp / "requirements.txt").write_text(_requirements_text(), encoding="utf-8")
    sub = build_submission(runs, name=name, track=track, author=author, github_id=github_id,
                           blurb=blurb, date=date, names=names)
    (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n", encoding="utf-8")
    plot_loss_curves([r.run for r in runs], tmp / "loss_curve.png", name)
    (tmp / "README.md").write_text(build_readme(sub, runs), encoding="utf-8")
    tmp.rename(dest)
    return dest


def run_record(args) -> int:
    """`record RUN_DIR... --name --track`: write the record folder, or refuse (exit 1) saying why."""
    try:
        dest = create_record(args.run_dirs, name=args.name, track=args.track, author=args.author,
                             github_id=args.github_id, blurb=args.blurb, out=Path(args.out),
                             date=args.date, code=args.code)
    except RecordError as exc:
        print(f"record: refused: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {dest}")
    return 0


# ----------------------------------------------------------------------------- verify

@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | N/A | NOTE
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


def _load_submission(folder: Path) -> dict | None:
    """submission.json with floats kept as the Decimal the file writes (to know its precision)."""
    path = folder / "submission.json"
    try:
        sub = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, json.JSONDecodeError):
        return None
    return sub if isinstance(sub, dict) else None


def _record_format(folder: Path, sub: dict | None) -> str:
    if sub is not None and "code_sha256" in sub:
        return "lila"
    logs = record_logs(folder)
    return "lila" if any(parse_run_log(p).format == "lila" for p in logs) else "official"


def _expected_files(folder: Path, sub: dict | None, fmt: str) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Files the record must hold and, for lila records, seed -> (log, artifact) names."""
    per_seed = {}
    if fmt == "lila" and sub is not None and isinstance(sub.get("seed_results"), dict):
        per_seed = {str(s): (v.get("log", f"train_seed{s}.log"), v.get("artifact", ""))
                    for s, v in sub["seed_results"].items()}
    required = list(LILA_REQUIRED_FILES if fmt == "lila" else OFFICIAL_REQUIRED_FILES)
    for log, artifact in per_seed.values():
        required += [log, artifact]
    return required, per_seed


def _check_files(folder: Path, required: list[str], logs: list[Path]) -> Check:
    missing = [n for n in required if not n or not (folder / n).is_file()]
    if not logs:
        missing.append("a training log (*.log)")
    if missing:
        return Check("files", "FAIL", "missing " + ", ".join(missing))
    return Check("files", "PASS", f"{len(required)} required files present, {len(logs)} log(s)")


def _check_fields(sub: dict | None, fmt: str) -> Check:
    if sub is None:
        return Check("fields", "FAIL", "submission.json is missing or not a JSON object")
    wanted = LILA_SUBMISSION_FIELDS if fmt == "lila" else SUBMISSION_FIELDS
    missing = [k for k in wanted if k not in sub]
    if missing:
        return Check("fields", "FAIL", "submission.json lacks " + ", ".join(missing))
    return Check("fields", "PASS", f"submission.json has the {len(wanted)} fields of the {fmt} format")


def _check_code_hash(folder: Path, runs: list[SeedRun], sub: dict | None, fmt: str) -> Check:
    if fmt == "official":
        return Check("code_hash", "N/A", "n/a: official-format logs carry no code hash")
    code = folder / CODE_NAME
    if not code.is_file():
        return Check("code_hash", "FAIL", f"no {CODE_NAME}")
    digest, size = sha256_file(code), code.stat().st_size
    bad = [f"{r.log_path.name} says {r.code_sha256}" for r in runs if r.code_sha256 != digest]
    bad += [f"{r.log_path.name} logs bytes_code:{r.bytes_code}" for r in runs if r.bytes_code != size]
    if sub is not None and sub.get("code_sha256") != digest:
        bad.append(f"submission.json says {sub.get('code_sha256')}")
    if bad:
        return Check("code_hash", "FAIL", f"{CODE_NAME} sha256 {digest} ({size} bytes) but " + "; ".join(bad))
    return Check("code_hash", "PASS", f"{CODE_NAME} sha256 {digest[:16]}... equals all {len(runs)} log(s)")


def _compare_number(key: str, written, logged: Decimal, strict: bool) -> str | None:
    """None when equal; else what differs. strict: 8 decimals; else at the decimals written (<= 8)."""
    if not isinstance(written, (Decimal, int)):
        return f"{key}: {written!r} is not a number"
    written = Decimal(written)
    places = 8 if strict else min(8, max(0, -written.as_tuple().exponent))
    expected = logged.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    return None if written == expected else f"{key}: submission.json {written} != logs {expected}"


def _number_pairs(sub: dict, runs: list[SeedRun], fmt: str) -> list[tuple[str, object, Decimal]]:
    """(key, value written in submission.json, value recomputed from the logs) for every number."""
    losses, bpbs = [r.val_loss for r in runs], [r.val_bpb for r in runs]
    pairs = [("val_loss", sub.get("val_loss"), mean8(losses)), ("val_bpb", sub.get("val_bpb"), mean8(bpbs))]
    for key, values in (("val_loss_std", losses), ("val_bpb_std", bpbs)):
        if key in sub:
            pairs.append((key, sub[key], std8(values)))
    for key, values in (("mean_val_loss", losses), ("mean_val_bpb", bpbs)):  # older official records
        if key in sub:
            pairs.append((key, sub[key], mean8(values)))
    by_seed = {r.seed: r for r in runs}
    for seed, res in (sub.get("seed_results") or {}).items():
        run = by_seed.get(str(seed))
        if run is None or not isinstance(res, dict):
            continue
        for key in ("val_loss", "val_bpb"):
            if key in res:
                pairs.append((f"seed_results.{seed}.{key}", res[key], Decimal(getattr(run, key))))
        if fmt == "official" and "artifact_bytes" in res and run.bytes_total is not None:
            pairs.append((f"seed_results.{seed}.artifact_bytes", res["artifact_bytes"], Decimal(run.bytes_total)))
        if fmt == "lila":
            for key in ("steps", "train_time_ms", "eval_time_ms", "bytes_model"):
                if getattr(run, key) is not None:
                    pairs.append((f"seed_results.{seed}.{key}", res.get(key), Decimal(str(getattr(run, key)))))
    return pairs


def _check_numbers(sub: dict | None, runs: list[SeedRun], fmt: str) -> Check:
    if sub is None or not runs:
        return Check("numbers", "FAIL", "nothing to compare (no submission.json or no readable log)")
    incomplete = [r.log_path.name for r in runs if r.val_loss is None or r.val_bpb is None or r.seed is None]
    if incomplete:
        return Check("numbers", "FAIL", "logs without a final score or seed: " + ", ".join(incomplete))
    bad = []
    seeds = sub.get("seeds")
    if seeds is not None and sorted(map(str, seeds)) != sorted(r.seed for r in runs):
        bad.append(f"seeds: submission.json {seeds} != logs {sorted(r.seed for r in runs)}")
    pairs = _number_pairs(sub, runs, fmt)
    bad += [m for key, w, logged in pairs if (m := _compare_number(key, w, logged, fmt == "lila"))]
    if bad:
        return Check("numbers", "FAIL", "; ".join(bad))
    how = "at 8 decimals" if fmt == "lila" else "at the decimals submission.json writes (at most 8)"
    return Check("numbers", "PASS", f"{len(pairs)} numbers equal the {len(runs)} log(s) {how}; "
                                    f"val_bpb {mean8([r.val_bpb for r in runs])}")


def _check_artifacts(folder: Path, runs: list[SeedRun], per_seed: dict, sub: dict | None) -> Check:
    """Lila records: each seed's artifact is the file its log measured (size) and submission.json
    hashed (sha256), and its header reads."""
    from .artifact import ArtifactError, read_artifact_header

    bad = []
    by_seed = {r.seed: r for r in runs}
    for seed, (_, name) in per_seed.items():
        path = folder / name
        if not name or not path.is_file():
            bad.append(f"seed {seed}: artifact {name or '(unnamed)'} missing")
            continue
        run, expected_sha = by_seed.get(seed), (sub["seed_results"][seed] or {}).get("artifact_sha256")
        if run is not None and path.stat().st_size != run.bytes_model:
            bad.append(f"{name}: {path.stat().st_size} bytes but its log says bytes_model:{run.bytes_model}")
        if sha256_file(path) != expected_sha:
            bad.append(f"{name}: sha256 differs from submission.json")
        try:
            read_artifact_header(path)
        except ArtifactError as exc:
            bad.append(str(exc))
    if bad:
        return Check("artifacts", "FAIL", "; ".join(bad))
    return Check("artifacts", "PASS", f"{len(per_seed)} artifact(s): sizes equal the logs, hashes equal submission.json")


def _measured_total(folder: Path, runs: list[SeedRun], per_seed: dict, fmt: str) -> tuple[int, int, int, str]:
    """(bytes_code measured, largest bytes_model, bytes_total, how the model bytes were obtained)."""
    code = folder / CODE_NAME
    bytes_code = code.stat().st_size if code.is_file() else 0
    if fmt == "lila":
        sizes = [(folder / a).stat().st_size for _, a in per_seed.values() if a and (folder / a).is_file()]
        return bytes_code, max(sizes, default=0), bytes_code + max(sizes, default=0), "measured"
    sizes = [r.bytes_model for r in runs if r.bytes_model is not None]
    return bytes_code, max(sizes, default=0), bytes_code + max(sizes, default=0), "read"


def _check_bytes(folder: Path, runs: list[SeedRun], per_seed: dict, sub: dict | None, fmt: str) -> Check:
    code, model, total, how = _measured_total(folder, runs, per_seed, fmt)
    detail = f"bytes_code:{code} (measured) bytes_model:{model} ({how}) bytes_total:{total}"
    bad = []
    if not (folder / CODE_NAME).is_file() or model == 0:
        bad.append("no code file or no model size to measure")
    if total > ARTIFACT_LIMIT_BYTES:
        bad.append(f"over the limit of {ARTIFACT_LIMIT_BYTES:,} by {total - ARTIFACT_LIMIT_BYTES:,} bytes")
    if sub is not None and sub.get("bytes_total") != total:
        bad.append(f"submission.json says bytes_total:{sub.get('bytes_total')}")
    if sub is not None and sub.get("bytes_code") != code:
        bad.append(f"submission.json says bytes_code:{sub.get('bytes_code')}")
    if bad:
        return Check("bytes_total", "FAIL", detail + ": " + "; ".join(bad))
    return Check("bytes_total", "PASS", f"{detail} <= {ARTIFACT_LIMIT_BYTES}")


def _track_of(folder: Path, sub: dict | None) -> str:
    track = str((sub or {}).get("track") or folder.resolve().parent.name)
    return track if track.startswith("track_") else f"track_{track}"


def _check_times(runs: list[SeedRun], track: str) -> Check:
    rules = TRACKS.get(track)
    if rules is None:
        return Check("times", "FAIL", f"unknown track {track!r} (known: {', '.join(TRACKS)})")
    bad = [m for r in runs for m in _limit_problems(r, rules)]
    train = _max_or_none(r.train_time_ms for r in runs)
    evals = _max_or_none(r.eval_time_ms for r in runs)
    detail = (f"{track}: max train {(train or 0) / 1000:.1f} s, max eval {(evals or 0) / 1000:.1f} s")
    if bad:
        return Check("times", "FAIL", detail + ": " + "; ".join(bad))
    limit = f"within {rules.train_s:.0f} s / {rules.eval_s:.0f} s" if rules.train_s else "(no limit)"
    return Check("times", "PASS", f"{detail} {limit}")


def _check_against(runs: list[SeedRun], previous: Path) -> Check:
    try:
        prev_runs = _score_runs(previous)
        res = welch_improvement_test([float(r.val_loss) for r in runs], [float(r.val_loss) for r in prev_runs])
    except (RecordError, TypeError) as exc:
        return Check("welch", "FAIL", f"against {previous}: {exc}")
    ok = res.p_value < SIGNIFICANCE_P
    detail = (f"val_loss improvement {res.improvement:.6f} nats over {previous.name} "
              f"({len(prev_runs)} vs {len(runs)} seeds); H1 improvement > {MIN_IMPROVEMENT_NATS}: "
              f"t={res.t:.3f} df={res.df:.2f} p={res.p_value:.3g} ({'<' if ok else '>='} {SIGNIFICANCE_P})")
    return Check("welch", "PASS" if ok else "FAIL", detail)


def _score_runs(folder: Path) -> list[SeedRun]:
    """The scored logs of a run or record folder (or one log file)."""
    folder = Path(folder)
    logs = [folder] if folder.is_file() else record_logs(folder)
    runs = [r for r in map(parse_run_log, logs) if r.val_loss is not None]
    if not runs:
        raise RecordError(f"{folder}: no log with a final val_loss")
    return runs


def verify_record(folder: Path, against: Path | None = None) -> list[Check]:
    """Every check of a record folder (lila or official format), in order."""
    folder = Path(folder)
    if not folder.is_dir():
        return [Check("files", "FAIL", f"{folder} is not a folder")]
    sub = _load_submission(folder)
    fmt = _record_format(folder, sub)
    required, per_seed = _expected_files(folder, sub, fmt)
    if fmt == "lila" and per_seed:
        log_paths = [folder / log for log, _ in per_seed.values() if (folder / log).is_file()]
    else:
        log_paths = record_logs(folder)
    runs = [r for r in map(parse_run_log, log_paths) if fmt == "lila" or r.val_loss is not None]
    checks = [_check_files(folder, required, log_paths), _check_fields(sub, fmt),
              _check_code_hash(folder, runs, sub, fmt), _check_numbers(sub, runs, fmt)]
    if fmt == "lila":
        checks.append(_check_artifacts(folder, runs, per_seed, sub))
    checks += [_check_bytes(folder, runs, per_seed, sub, fmt), _check_times(runs, _track_of(folder, sub))]
    subsets = sorted({r.val_subset for r in runs if r.val_subset})
    if subsets:
        checks.append(Check("val_set", "NOTE", f"scored on {', '.join(subsets)} only (NOT the full val set)"))
    if against is not None:
        checks.append(_check_against(runs, Path(against)) if runs else
                      Check("welch", "FAIL", "no scored logs in this record"))
    return checks


def run_verify(args) -> int:
    """`verify RECORD_DIR [--against PREV]`: one line per check; exit 1 naming the failed ones."""
    checks = verify_record(Path(args.record_dir), Path(args.against) if args.against else None)
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        print(f"verify: FAIL ({', '.join(failed)})")
        return 1
    print(f"verify: PASS ({sum(c.status == 'PASS' for c in checks)} checks)")
    return 0


# ----------------------------------------------------------------------------- compare

@dataclass
class CompareRow:
    label: str
    seeds: int
    val_bpb_mean: Decimal
    val_bpb_std: Decimal
    val_loss_mean: Decimal
    bytes_total: int | None
    bytes_source: str  # "measured" | "log"
    steps_mean: float | None
    train_s_max: float | None
    eval_s_max: float | None


def compare_row(path: Path) -> CompareRow:
    """One row of the compare table for a run folder, a record folder or a log file."""
    path = Path(path)
    runs = _score_runs(path)
    try:
        size = measure_size([path]) if path.is_dir() else None
    except RecordError:
        size = None
    measured = size is not None and not size.model_source.startswith("read")
    total = size.bytes_total if measured else _max_or_none(r.bytes_total for r in runs)
    steps = [r.steps for r in runs if r.steps is not None]
    return CompareRow(path.name if path.is_dir() else path.stem, len(runs),
                      mean8([r.val_bpb for r in runs]), std8([r.val_bpb for r in runs]),
                      mean8([r.val_loss for r in runs]), total, "measured" if measured else "log",
                      statistics.fmean(steps) if steps else None,
                      _max_or_none(r.train_time_ms and r.train_time_ms / 1000 for r in runs),
                      _max_or_none(r.eval_time_ms and r.eval_time_ms / 1000 for r in runs))


def format_compare(rows: list[CompareRow]) -> str:
    """Aligned text table, one row per input, in the order given."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    header = ["run", "seeds", "val_bpb", "std", "val_loss", "bytes_total", "steps", "train_s", "eval_s"]
    table = [header] + [[r.label, str(r.seeds), f"{r.val_bpb_mean:.8f}", f"{r.val_bpb_std:.8f}" if r.seeds > 1 else "-",
                         f"{r.val_loss_mean:.8f}", fmt(r.bytes_total, ",") + ("" if r.bytes_source == "measured" else "*"),
                         fmt(r.steps_mean, ".0f"), fmt(r.train_s_max, ".1f"), fmt(r.eval_s_max, ".1f")]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    if any(r.bytes_source != "measured" for r in rows):
        lines.append("* bytes_total as logged (no code + model files to measure)")
    return "\n".join(lines)


def run_compare(args) -> int:
    """`compare RUN_OR_RECORD...`: print the table (exit 2 when an input has no scored log)."""
    try:
        rows = [compare_row(Path(p)) for p in args.paths]
    except RecordError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(format_compare(rows))
    return 0


# ----------------------------------------------------------------------------- command line

def add_records_parsers(subparsers) -> None:
    """Register `size`, `record`, `verify` and `compare` on the lila_golf command line."""
    p = subparsers.add_parser("size", help="bytes of code + model; exit 1 over 16,000,000")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="a run or record folder, or the code file and the model file")
    p.set_defaults(func=run_size)

    p = subparsers.add_parser("record", help="make records/<track>/<date>_<name>/ from run folders")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="one finished run folder per seed")
    p.add_argument("--name", required=True)
    p.add_argument("--track", required=True, choices=sorted(TRACKS))
    p.add_argument("--author", default="")
    p.add_argument("--github-id", default="")
    p.add_argument("--blurb", default="")
    p.add_argument("--out", default="records", help="parent of the track folders (default records)")
    p.add_argument("--date", default=None, help="YYYY-MM-DD (default today)")
    p.add_argument("--code", type=Path, default=None,
                   help=f"the {CODE_NAME} that ran, for run folders without one (hash-checked)")
    p.set_defaults(func=run_record)

    p = subparsers.add_parser("verify", help="check a record folder; exit 1 on any failure")
    p.add_argument("record_dir", type=Path)
    p.add_argument("--against", type=Path, default=None,
                   help="previous record: Welch test that val_loss improves by > 0.005 nats at p < 0.01")
    p.set_defaults(func=run_verify)

    p = subparsers.add_parser("compare", help="table of val_bpb (mean, std), bytes, steps and times")
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_RECORD")
    p.set_defaults(func=run_compare)


def main(argv: list[str] | None = None) -> int:
    """`python -m lila_golf.records {size,record,verify,compare} ...`"""
    parser = argparse.ArgumentParser(prog="lila_golf.records", description=__doc__.split("\n\n")[0])
    add_records_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
