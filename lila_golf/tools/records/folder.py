"""The record folder: its tracks and limits, the files and fields it must hold, and the numbers
helpers (8-decimal means, sha256, Welch's test) that `record` writes and `verify` recomputes with.

A record is `records/<track>/<YYYY-MM-DD>_<Name>/` holding README.md, submission.json, the exact
train_gpt.py that ran (its sha256 equals every log's `code_sha256`), requirements.txt,
loss_curve.png, and per seed `train_seed<S>.log` + `final_model_seed<S>.<scheme>.<codec>.lgz`.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath

from .logs import RecordError, SeedRun, parse_run_log, record_logs

from ...core.config import ARTIFACT_LIMIT_BYTES  # torch-free
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


SUBMISSION_MAX_BYTES = 1 << 20  # submission.json is a few KB
SAFE_WORD = re.compile(r"^[A-Za-z0-9_-]+$")  # seeds, schemes and codecs that become file names
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class TrackRules:
    train_s: float | None  # wall-clock limit of training (None = no limit)
    eval_s: float | None  # wall-clock limit of evaluation
    hardware: str
    fineweb: bool = True  # scores must be on FineWeb data (the log's data label)


TRACKS = {
    "track_10min_16mb": TrackRules(600, 600, "8xH100 SXM"),
    "track_cpu_10min": TrackRules(600, 600, "2 CPU cores"),
    "track_non_record_16mb": TrackRules(None, None, "any", fineweb=False),
}


# ----------------------------------------------------------------------------- paths

def resolve_inside(folder: Path, name, what: str) -> Path:
    """folder / name, refusing a name that is not a plain relative path inside the folder: absolute,
    with a drive or '..', or resolving (through symlinks) outside it."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise RecordError(f"{what}: {name!r} is not a file name")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(name).drive or ".." in pure.parts:
        raise RecordError(f"{what}: {name!r} leaves the folder (absolute path or '..')")
    path, root = Path(folder) / pure, Path(folder).resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise RecordError(f"{what}: {name!r} resolves to {real}, outside {folder} (a symlink leaving it)")
    return path


def links_leaving(folder: Path) -> list[str]:
    """Files or folders directly in `folder` (and logs/) whose symlinks resolve outside it."""
    root, bad = Path(folder).resolve(), []
    for p in [*Path(folder).iterdir(), *(Path(folder) / "logs").glob("*")]:
        if p.is_symlink():
            real = p.resolve()
            if real != root and root not in real.parents:
                bad.append(f"{p.relative_to(folder)} -> {real}")
    return bad


def safe_word(value, what: str) -> str:
    """A seed, quantisation scheme or codec from a log that is about to become part of a file name."""
    if not isinstance(value, str) or not SAFE_WORD.match(value):
        raise RecordError(f"{what} {value!r} is not a plain word (letters, digits, '_' or '-'): refused as a file name")
    return value


def official_val_targets(run: SeedRun) -> int | None:
    """Targets of the official FineWeb val set this run's tokenizer makes (tokens - 1), when known."""
    from ...core.data import FINEWEB_VAL_HEADS
    if run.data_label != "fineweb":
        return None
    counts = {variant: n for variant, n in FINEWEB_VAL_HEADS.values()}
    n = counts.get(f"sp{run.config.get('vocab_size')}")
    return None if n is None else n - 1


def val_coverage(run: SeedRun) -> str:
    """What a run's score covers, in words: "all 62,021,845 targets of the official FineWeb val set",
    "the first 131,071 of 62,021,845 targets ...", or the data it is on when that is not FineWeb."""
    official, n = official_val_targets(run), run.targets
    if run.data_label not in (None, "fineweb"):
        return f"{n:,} targets of {run.data_label} data (NOT FineWeb: not comparable to challenge scores)"
    if official is None or n is None:
        return f"{'?' if n is None else f'{n:,}'} targets (the log does not say whether they are the official val set)"
    if n == official:
        return f"all {official:,} targets of the official FineWeb validation set"
    return f"the first {n:,} of {official:,} targets of the official FineWeb validation set (NOT the full val set)"


# ----------------------------------------------------------------------------- submission.json

def load_submission(folder: Path) -> dict | None:
    """submission.json with floats kept as the Decimal the file writes (to know its precision)."""
    path = folder / "submission.json"
    try:
        if path.stat().st_size > SUBMISSION_MAX_BYTES:
            return None
        sub = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return sub if isinstance(sub, dict) else None


def record_format(folder: Path, sub: dict | None) -> str:
    """"lila" when submission.json or any log carries a code hash, else "official"."""
    if sub is not None and "code_sha256" in sub:
        return "lila"
    logs = record_logs(folder)
    return "lila" if any(parse_run_log(p).format == "lila" for p in logs) else "official"


def expected_files(folder: Path, sub: dict | None, fmt: str) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Files the record must hold and, for lila records, seed -> (log, artifact) names."""
    per_seed = {}
    if fmt == "lila" and sub is not None and isinstance(sub.get("seed_results"), dict):
        per_seed = {str(s): (v.get("log", f"train_seed{s}.log"), v.get("artifact", "")) if isinstance(v, dict)
                    else ("", "") for s, v in sub["seed_results"].items()}
    required = list(LILA_REQUIRED_FILES if fmt == "lila" else OFFICIAL_REQUIRED_FILES)
    for log, artifact in per_seed.values():
        required += [log, artifact]
    return required, per_seed


def track_of(folder: Path, sub: dict | None) -> str:
    """The track submission.json names, else the folder's parent (records/<track>/<record>)."""
    track = str((sub or {}).get("track") or folder.resolve().parent.name)
    return track if track.startswith("track_") else f"track_{track}"


# ----------------------------------------------------------------------------- time limits

def clock_rule(run: SeedRun) -> str:
    """Which training-clock rule a log is held to (train_time_within)."""
    if run.gptq_time_ms is not None:
        return "train_time_ms + gptq_time_ms <= cap, no allowance (log with gptq_time_ms)"
    return "last step began before the cap (official-format or older log)"


def train_time_within(run: SeedRun, limit_s: float | None) -> bool:
    """Logs that carry gptq_time_ms (GPTQ calibrated inside the clock): train_time_ms +
    gptq_time_ms <= cap, and no `time_valid:false`. Other logs: training is within the cap when it
    ends by it, or when it stopped at the wall-clock cap and its last step began before the cap
    (both trainers test the clock between steps, so the log overshoots by under one step: the
    official baseline logs 600,038 ms). The last step's start is read from the log
    (`last_step_start_ms`) when present; older logs only give the mean step time, and a single step
    can run longer than the mean, so they are allowed 1.5 mean steps."""
    if limit_s is None:
        return True
    if run.train_time_ms is None:
        return False
    if run.gptq_time_ms is not None:
        return run.train_time_ms + run.gptq_time_ms <= 1000 * limit_s and run.time_valid is not False
    if run.train_time_ms <= 1000 * limit_s:
        return True
    if run.last_step_start_ms is not None:
        return run.last_step_start_ms < 1000 * limit_s
    mean_step_ms = run.train_time_ms / run.steps if run.steps else 0.0
    return run.train_time_ms - 1.5 * mean_step_ms < 1000 * limit_s


def limit_problems(run: SeedRun, rules: TrackRules) -> list[str]:
    """What breaks the track's time limits in one log (empty when nothing does). The eval time is
    the submitted line's eval_time_ms, which covers every phase; each phase must fit inside it."""
    bad, name = [], run.log_path.name
    if run.train_time_ms is None or run.eval_time_ms is None:
        bad.append(f"{name}: no {'train' if run.train_time_ms is None else 'eval'} time in the log")
    if run.train_time_ms is not None and not train_time_within(run, rules.train_s):
        if run.gptq_time_ms is not None:
            bad.append(f"{name}: train {run.train_time_ms / 1000:.1f} s + gptq {run.gptq_time_ms / 1000:.1f} s = "
                       f"{(run.train_time_ms + run.gptq_time_ms) / 1000:.1f} s > {rules.train_s:.0f} s"
                       + (" (time_valid:false)" if run.time_valid is False else ""))
        else:
            bad.append(f"{name}: train {run.train_time_ms / 1000:.1f} s > {rules.train_s:.0f} s")
    if run.eval_time_ms is not None and rules.eval_s is not None and run.eval_time_ms > 1000 * rules.eval_s:
        bad.append(f"{name}: eval {run.eval_time_ms / 1000:.1f} s (all phases) > {rules.eval_s:.0f} s")
    phase_ms = [float(p.get("time_ms", "nan")) for p in run.eval_phases]
    if run.eval_time_ms is not None and phase_ms and not sum(phase_ms) <= run.eval_time_ms + len(phase_ms):
        bad.append(f"{name}: eval phases take {sum(phase_ms):.0f} ms, more than the submitted eval_time_ms "
                   f"{run.eval_time_ms:.0f} that must cover them")
    return bad


# ----------------------------------------------------------------------------- numbers

def mean8(values: list[str]) -> Decimal:
    """Mean of logged decimals, exact, then rounded to 8 decimals (half-even)."""
    return (sum(Decimal(v) for v in values) / len(values)).quantize(EIGHT_DECIMALS, ROUND_HALF_EVEN)


def std8(values: list[str]) -> Decimal:
    """Sample standard deviation (n-1) of logged decimals at 8 decimals; 0 for one seed."""
    if len(values) < 2:
        return Decimal(0).quantize(EIGHT_DECIMALS)
    return statistics.stdev([Decimal(v) for v in values]).quantize(EIGHT_DECIMALS, ROUND_HALF_EVEN)


def max_or_none(values):
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

