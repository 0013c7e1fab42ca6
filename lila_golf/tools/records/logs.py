"""Training logs, the one parser: what a lila_golf or official log says, as a SeedRun.

Both formats are read here and nowhere else: the record tools (size, record, verify, compare), the
demo's summary and the benchmarks all take their numbers from parse_run_log.

The score of a lila log is its `final_submitted` line (the evaluation the run submits, every phase
in it: `final_submitted val_loss:L val_bpb:B targets:N bytes:Y eval_time_ms:T phases:plain,sliding
data:fineweb`, with one `eval_phase name:.. val_loss:.. val_bpb:.. targets:.. bytes:.. time_ms:..`
per phase); logs written before that line existed are scored by their `final_*_roundtrip` line, and
SeedRun.score_source says which. `time_budget train_time_ms:X gptq_time_ms:G total_ms:S cap_ms:C`
and `time_valid:true|false [over_cap_ms:N]` give the training clock of logs that calibrate GPTQ
inside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


class RecordError(ValueError):
    """A run or record folder that cannot be measured, recorded or read; the message names it."""


@dataclass
class SeedRun:
    """What one training log says. Numbers stay the strings the log printed (full precision)."""
    log_path: Path
    format: str  # "lila" (lila_golf.core.train) | "official" (openai/parameter-golf records)
    seed: str | None = None
    val_loss: str | None = None
    val_bpb: str | None = None
    score_key: str | None = None  # e.g. final_int8_zlib_roundtrip
    steps: int | None = None
    train_time_ms: float | None = None
    last_step_start_ms: float | None = None  # logged by lila_golf.core.train since it was added
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
    float_val_bpb: str | None = None  # the `final_float` line: the weights before quantisation
    model_params: int | None = None
    targets: int | None = None  # val targets the score covers
    data_label: str | None = None  # `data:` of the score line (fineweb | embedded_pydoc | other)
    score_source: str = ""  # "final_submitted", or "roundtrip" for older logs without it
    phases: list[str] = field(default_factory=list)  # eval phases of the submitted score, in order
    eval_phases: list[dict] = field(default_factory=list)  # `eval_phase` lines, as logged
    gptq_time_ms: float | None = None  # `time_budget` line: GPTQ calibration inside the clock
    time_cap_ms: float | None = None
    time_valid: bool | None = None  # `time_valid:` line
    roundtrip: dict = field(default_factory=dict)  # the final_*_roundtrip line's words
    submitted: dict = field(default_factory=dict)  # the final_submitted line's words


def key_values(words: list[str]) -> dict[str, str]:
    """The `key:value` words of a log line (a value may itself hold ':')."""
    return dict(w.partition(":")[::2] for w in words if ":" in w)


def _ms(value: str) -> float:
    return float(value[:-2] if value.endswith("ms") else value)


def _step_of(value: str) -> int:
    return int(value.split("/")[0])


def _parse_lila_line(run: SeedRun, line: str) -> None:
    words = line.split()
    if not words:
        return
    head, tok = words[0], key_values(words)
    if head.startswith("code_sha256:"):
        run.code_sha256, run.bytes_code = tok["code_sha256"], int(tok.get("bytes_code", -1))
    elif head.startswith("python:"):
        run.versions = line.strip()
    elif head.startswith("device:"):
        run.device = line.strip()
    elif head == "config":
        run.config = key_values(words[1:])
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
        run.roundtrip = {**tok, "key": head}
    elif head == "final_submitted":
        run.submitted = tok
    elif head == "eval_phase":
        run.eval_phases.append(tok)
    elif head == "time_budget":
        run.gptq_time_ms, run.time_cap_ms = float(tok["gptq_time_ms"]), float(tok.get("cap_ms", "nan"))
        if "train_time_ms" in tok:
            run.train_time_ms = float(tok["train_time_ms"])
    elif head.startswith("time_valid:"):
        run.time_valid = tok["time_valid"] == "true"
    elif head == "final_float":
        run.float_val_bpb = tok.get("val_bpb")
    elif head.startswith("model_params:"):
        run.model_params = int(tok["model_params"])
    elif head.startswith("bytes_code:"):
        run.bytes_code, run.bytes_model = int(tok["bytes_code"]), int(tok["bytes_model"])
        run.bytes_total = int(tok["bytes_total"])
    elif head.startswith("artifact_valid:"):
        run.artifact_valid = tok["artifact_valid"] == "true"


def parse_lila_log(path: Path) -> SeedRun:
    """A log written by lila_golf.core.train (first line `code_sha256:...`); later lines win."""
    run = SeedRun(Path(path), "lila")
    for line in _read_text(path).splitlines():
        try:
            _parse_lila_line(run, line)
        except (KeyError, ValueError) as exc:
            raise RecordError(f"{path}: malformed log line {line[:80]!r} ({type(exc).__name__}: {exc})") from None
    try:
        _lila_score(run)
    except (KeyError, ValueError) as exc:
        raise RecordError(f"{path}: malformed score line ({type(exc).__name__}: {exc})") from None
    return run


def _lila_score(run: SeedRun) -> None:
    """The run's score: the final_submitted line, else (older logs) the final_*_roundtrip line."""
    if run.submitted:
        sub = run.submitted
        run.score_key, run.score_source = "final_submitted", "final_submitted"
        run.val_loss, run.val_bpb, run.data_label = sub.get("val_loss"), sub.get("val_bpb"), sub.get("data")
        run.eval_time_ms = float(sub["eval_time_ms"]) if "eval_time_ms" in sub else None
        run.targets = int(sub["targets"]) if "targets" in sub else None
        run.phases = [p for p in sub.get("phases", "").split(",") if p]
    elif run.roundtrip:
        rt = run.roundtrip
        run.score_key, run.score_source = rt["key"], "roundtrip"
        run.val_loss, run.val_bpb, run.data_label = rt.get("val_loss"), rt.get("val_bpb"), rt.get("data")
        run.eval_time_ms = _ms(rt["eval_time"]) if "eval_time" in rt else None
        run.targets = int(rt["tokens"]) if "tokens" in rt else None
        run.phases = ["plain"]


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


LOG_MAX_BYTES = 64 << 20  # a training log is kilobytes; refuse to read a huge file into memory


def _read_text(path: Path) -> str:
    try:
        if Path(path).stat().st_size > LOG_MAX_BYTES:
            raise RecordError(f"{path}: {Path(path).stat().st_size} bytes, too large for a training log "
                              f"(cap {LOG_MAX_BYTES})")
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror})") from None


def record_logs(folder: Path) -> list[Path]:
    """Training logs of a run or record folder: train.log / train_seed*.log / *.log, logs/*.{log,txt}."""
    logs = sorted(p for p in folder.glob("*.log") if p.is_file())
    logs += sorted(p for p in folder.glob("logs/*") if p.suffix in (".log", ".txt") and p.is_file())
    root = Path(folder).resolve()
    for p in logs:  # a symlink leaving the folder would make us read (and report) another file
        if not p.resolve().is_relative_to(root):
            raise RecordError(f"{p}: a symlink to {p.resolve()}, outside {folder}: refused")
    return logs


def score_runs(folder: Path) -> list[SeedRun]:
    """The scored logs of a run or record folder (or one log file)."""
    folder = Path(folder)
    logs = [folder] if folder.is_file() else record_logs(folder)
    runs = [r for r in map(parse_run_log, logs) if r.val_loss is not None]
    if not runs:
        raise RecordError(f"{folder}: no log with a final val_loss")
    return runs
