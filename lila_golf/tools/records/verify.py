"""`verify`: every check of a record folder, lila or official format, one line each.

    python -m lila_golf verify records/track_cpu_10min/2026-05-01_CPU_baseline [--against OLD_RECORD]
    python -m lila_golf verify RECORD --reeval [--data-path DIR] [--tokenizer T.model]

Each number in submission.json is recomputed from the logs and bytes are measured from the files.
Folders in the official challenge format (openai/parameter-golf: logs without code hash, no model
file) verify with the model bytes read from the log (labelled "read") and the hash check "n/a".
Every path read from submission.json must resolve inside the folder (no '..', no absolute path, no
symlink leaving it); a folder that breaks this fails before anything else is read. A log's score
is its `final_submitted` line, or for older logs the `final_*_roundtrip` line (said per log).
`--reeval` reloads each seed's artifact and re-scores the submitted line on the data the log names
(lila_golf/tools/records/reeval.py), failing on any difference in the printed figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from .folder import (ARTIFACT_LIMIT_BYTES, CODE_NAME, LILA_SUBMISSION_FIELDS, MIN_IMPROVEMENT_NATS,
                     SIGNIFICANCE_P, SUBMISSION_FIELDS, TRACKS, clock_rule, expected_files, limit_problems,
                     links_leaving, load_submission, max_or_none, mean8, official_val_targets, record_format,
                     resolve_inside, sha256_file, std8, track_of, val_coverage, welch_improvement_test)
from .logs import RecordError, SeedRun, parse_run_log, record_logs, score_runs


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | N/A | NOTE
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


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
    from ...core.artifact import ArtifactError, read_artifact_header

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


def _check_times(runs: list[SeedRun], track: str) -> Check:
    rules = TRACKS.get(track)
    if rules is None:
        return Check("times", "FAIL", f"unknown track {track!r} (known: {', '.join(TRACKS)})")
    bad = [m for r in runs for m in limit_problems(r, rules)]
    train = max_or_none(r.train_time_ms for r in runs)
    evals = max_or_none(r.eval_time_ms for r in runs)
    gptq = max_or_none(r.gptq_time_ms for r in runs)
    rules_used = "; ".join(sorted({clock_rule(r) for r in runs}))
    detail = (f"{track}: max train {(train or 0) / 1000:.1f} s" + (f" + gptq {gptq / 1000:.1f} s" if gptq else "")
              + f", max eval {(evals or 0) / 1000:.1f} s (all phases); clock rule: {rules_used}")
    if bad:
        return Check("times", "FAIL", detail + ": " + "; ".join(bad))
    limit = f"within {rules.train_s:.0f} s / {rules.eval_s:.0f} s" if rules.train_s else "(no limit)"
    return Check("times", "PASS", f"{detail}; {limit}")


def _check_score_lines(runs: list[SeedRun]) -> Check:
    """Which line each log is scored by: final_submitted, or the roundtrip line of older logs."""
    older = [r.log_path.name for r in runs if r.score_source == "roundtrip"]
    if not older:
        phases = sorted({",".join(r.phases) for r in runs})
        return Check("score_line", "PASS", f"every log scored by its final_submitted line (phases {'; '.join(phases)})")
    return Check("score_line", "NOTE", f"{', '.join(older)}: older log(s) without a final_submitted line, scored "
                                       f"by the plain final_*_roundtrip line")


def _check_data(runs: list[SeedRun], track: str, sub: dict | None) -> Check:
    """The data every score is on (the logs' data labels) against the track; full_val_set as claimed."""
    rules = TRACKS.get(track)
    labels = sorted({r.data_label or "unlabelled" for r in runs})
    coverage = "; ".join(sorted({val_coverage(r) for r in runs}))
    full = bool(runs) and all(r.targets is not None and r.targets == official_val_targets(r) for r in runs)
    claimed = ((sub or {}).get("compliance") or {}).get("full_val_set")
    bad = []
    if rules is not None and rules.fineweb and any(r.data_label not in (None, "fineweb") for r in runs):
        bad.append(f"{track} needs FineWeb scores, the logs say data:{','.join(labels)}")
    if claimed is True and not full:
        bad.append("submission.json claims compliance.full_val_set:true")
    detail = f"data:{','.join(labels)}; scored on {coverage}"
    if bad:
        return Check("data", "FAIL", detail + ": " + "; ".join(bad))
    if "unlabelled" in labels:
        return Check("data", "NOTE", detail + " (older logs carry no data label: --reeval decides it from the data)")
    return Check("data", "PASS", detail)


def _check_against(runs: list[SeedRun], previous: Path) -> Check:
    try:
        prev_runs = score_runs(previous)
        res = welch_improvement_test([float(r.val_loss) for r in runs], [float(r.val_loss) for r in prev_runs])
    except (RecordError, TypeError) as exc:
        return Check("welch", "FAIL", f"against {previous}: {exc}")
    ok = res.p_value < SIGNIFICANCE_P
    detail = (f"val_loss improvement {res.improvement:.6f} nats over {previous.name} "
              f"({len(prev_runs)} vs {len(runs)} seeds); H1 improvement > {MIN_IMPROVEMENT_NATS}: "
              f"t={res.t:.3f} df={res.df:.2f} p={res.p_value:.3g} ({'<' if ok else '>='} {SIGNIFICANCE_P})")
    return Check("welch", "PASS" if ok else "FAIL", detail)


def _check_paths(folder: Path, sub: dict | None, per_seed: dict) -> Check | None:
    """Every file name submission.json gives (or implies) stays inside the folder; None when so."""
    bad, results = [], (sub or {}).get("seed_results")
    if results is not None and not isinstance(results, dict):
        bad.append("seed_results is not an object")
    for seed, names in per_seed.items():
        for key, name in zip(("log", "artifact"), names):
            try:
                if name != "":
                    resolve_inside(folder, name, f"seed_results.{seed}.{key}")
            except RecordError as exc:
                bad.append(str(exc))
    return Check("paths", "FAIL", "; ".join(bad) + ": nothing outside the folder is read") if bad else None


def verify_record(folder: Path, against: Path | None = None, reeval: dict | None = None) -> list[Check]:
    """Every check of a record folder (lila or official format), in order. reeval: None, or the
    options of reeval.reeval_record (data_path, tokenizer, device) to re-score every seed."""
    folder = Path(folder)
    if not folder.is_dir():
        return [Check("files", "FAIL", f"{folder} is not a folder")]
    if links := links_leaving(folder):
        return [Check("paths", "FAIL", f"symlink {links[0]} leaves the folder: nothing outside it is read")]
    sub = load_submission(folder)
    fmt = record_format(folder, sub)
    required, per_seed = expected_files(folder, sub, fmt)
    if unsafe := _check_paths(folder, sub, per_seed):
        return [unsafe]
    if fmt == "lila" and per_seed:
        log_paths = [folder / log for log, _ in per_seed.values() if (folder / log).is_file()]
    else:
        log_paths = record_logs(folder)
    runs = [r for r in map(parse_run_log, log_paths) if fmt == "lila" or r.val_loss is not None]
    track = track_of(folder, sub)
    checks = [_check_files(folder, required, log_paths), _check_fields(sub, fmt),
              _check_code_hash(folder, runs, sub, fmt), _check_numbers(sub, runs, fmt)]
    if fmt == "lila":
        checks += [_check_artifacts(folder, runs, per_seed, sub), _check_score_lines(runs), _check_data(runs, track, sub)]
    checks += [_check_bytes(folder, runs, per_seed, sub, fmt), _check_times(runs, track)]
    subsets = sorted({r.val_subset for r in runs if r.val_subset})
    if subsets:
        checks.append(Check("val_set", "NOTE", f"scored on {', '.join(subsets)} only (NOT the full val set)"))
    if reeval is not None:
        from .reeval import reeval_record
        checks += reeval_record(folder, runs, per_seed, fmt, **reeval)
    if against is not None:
        checks.append(_check_against(runs, Path(against)) if runs else
                      Check("welch", "FAIL", "no scored logs in this record"))
    return checks


def run_verify(args) -> int:
    """`verify RECORD_DIR [--against PREV]`: one line per check; exit 1 naming the failed ones."""
    reeval = dict(data_path=args.data_path, tokenizer=args.tokenizer, device=args.device) if args.reeval else None
    try:
        checks = verify_record(Path(args.record_dir), Path(args.against) if args.against else None, reeval)
    except RecordError as exc:
        checks = [Check("read", "FAIL", str(exc))]
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        print(f"verify: FAIL ({', '.join(failed)})")
        return 1
    print(f"verify: PASS ({sum(c.status == 'PASS' for c in checks)} checks)")
    return 0


def add_verify_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check a record folder; exit 1 on any failure")
    p.add_argument("record_dir", type=Path)
    p.add_argument("--against", type=Path, default=None,
                   help="previous record: Welch test that val_loss improves by > 0.005 nats at p < 0.01")
    p.add_argument("--reeval", action="store_true",
                   help="reload every seed's artifact and re-score its submitted line on the data the log names")
    p.add_argument("--data-path", default=None, help="--reeval: the val shards' folder, if not where the log says")
    p.add_argument("--tokenizer", default=None, help="--reeval: the tokenizer, if not where the log says")
    p.add_argument("--device", default="cpu", help="--reeval: cpu (default), cuda, ...")
    p.set_defaults(func=run_verify)
