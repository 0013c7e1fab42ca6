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

One module per thing a user does (size, create, verify, compare) over two shared ones: logs (the
one training-log parser) and folder (tracks, required files, the numbers helpers).
"""
from __future__ import annotations

import argparse

from .compare import CompareRow, add_compare_parser, compare_row, format_compare, run_compare
from .create import (RecordedRun, add_record_parser, build_readme, build_submission, create_record, folder_name,
                     plot_loss_curves, reproduce_env, run_record)
from .folder import (ARTIFACT_LIMIT_BYTES, CODE_NAME, EIGHT_DECIMALS, LILA_REQUIRED_FILES, LILA_SUBMISSION_FIELDS,
                     MIN_IMPROVEMENT_NATS, OFFICIAL_REQUIRED_FILES, PER_SEED_KEYS, SIGNIFICANCE_P, SUBMISSION_FIELDS,
                     TRACKS, TrackRules, WelchResult, mean8, sha256_file, std8, train_time_within,
                     welch_improvement_test)
from .logs import (RecordError, SeedRun, key_values, parse_lila_log, parse_official_log, parse_run_log, record_logs,
                   score_runs)
from .size import SizeReport, add_size_parser, measure_size, run_size
from .verify import Check, add_verify_parser, run_verify, verify_record


def add_records_parsers(subparsers) -> None:
    """Register `size`, `record`, `verify` and `compare` on the lila_golf command line."""
    for add in (add_size_parser, add_record_parser, add_verify_parser, add_compare_parser):
        add(subparsers)


def main(argv: list[str] | None = None) -> int:
    """`python -m lila_golf.tools.records {size,record,verify,compare} ...`"""
    parser = argparse.ArgumentParser(prog="lila_golf.tools.records", description=__doc__.split("\n\n")[0])
    add_records_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
