"""`compare`: one table of runs and records: val_bpb (mean, std), val_loss, bytes, steps, times.

    python -m lila_golf compare runs/a runs/b records/track_cpu_10min/2026-05-01_CPU_baseline

Scores are each log's `final_submitted` line and eval times its eval_time_ms (all phases); older
logs without that line are scored by the plain roundtrip line (column score: roundtrip).
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .folder import max_or_none, mean8, std8
from .logs import RecordError, score_runs
from .size import measure_size


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
    score: str = "?"  # the line the logs are scored by: submitted | roundtrip (older logs) | official
    data: str = "?"  # the logs' data labels


def compare_row(path: Path) -> CompareRow:
    """One row of the compare table for a run folder, a record folder or a log file."""
    path = Path(path)
    runs = score_runs(path)
    try:
        size = measure_size([path]) if path.is_dir() else None
    except RecordError:
        size = None
    measured = size is not None and not size.model_source.startswith("read")
    total = size.bytes_total if measured else max_or_none(r.bytes_total for r in runs)
    steps = [r.steps for r in runs if r.steps is not None]
    return CompareRow(path.name if path.is_dir() else path.stem, len(runs),
                      mean8([r.val_bpb for r in runs]), std8([r.val_bpb for r in runs]),
                      mean8([r.val_loss for r in runs]), total, "measured" if measured else "log",
                      statistics.fmean(steps) if steps else None,
                      max_or_none(r.train_time_ms and r.train_time_ms / 1000 for r in runs),
                      max_or_none(r.eval_time_ms and r.eval_time_ms / 1000 for r in runs),
                      ",".join(sorted({(r.score_source or r.format).replace("final_", "") for r in runs})),
                      ",".join(sorted({r.data_label or "?" for r in runs})))


def format_compare(rows: list[CompareRow]) -> str:
    """Aligned text table, one row per input, in the order given."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    header = ["run", "seeds", "val_bpb", "std", "val_loss", "bytes_total", "steps", "train_s", "eval_s", "score", "data"]
    table = [header] + [[r.label, str(r.seeds), f"{r.val_bpb_mean:.8f}",
                         f"{r.val_bpb_std:.8f}" if r.seeds > 1 else "-",
                         f"{r.val_loss_mean:.8f}", fmt(r.bytes_total, ",") + ("" if r.bytes_source == "measured" else "*"),
                         fmt(r.steps_mean, ".0f"), fmt(r.train_s_max, ".1f"), fmt(r.eval_s_max, ".1f"), r.score, r.data]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    if any(r.bytes_source != "measured" for r in rows):
        lines.append("* bytes_total as logged (no code + model files to measure)")
    if any("roundtrip" in r.score for r in rows):
        lines.append("score roundtrip: older logs without a final_submitted line, scored by the plain roundtrip line")
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


def add_compare_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="table of val_bpb (mean, std), bytes, steps and times")
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_RECORD")
    p.set_defaults(func=run_compare)
