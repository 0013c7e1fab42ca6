"""`size`: the bytes a submission counts, code + model, against the 16,000,000-byte cap.

    python -m lila_golf size runs/my_run                        # exit 1 over 16,000,000 bytes
    python -m lila_golf size train_gpt.py final_model.int8.zlib.lgz
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .folder import ARTIFACT_LIMIT_BYTES, CODE_NAME, resolve_inside
from .logs import RecordError, parse_run_log, record_logs


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
    for p in [code, *folder.glob("*.lgz")]:  # a symlink leaving the folder would measure another file
        resolve_inside(folder, p.name, "size")
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


def add_size_parser(subparsers) -> None:
    p = subparsers.add_parser("size", help="bytes of code + model; exit 1 over 16,000,000")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="a run or record folder, or the code file and the model file")
    p.set_defaults(func=run_size)
