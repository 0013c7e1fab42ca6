"""`record`: a record folder made from finished run folders, one per seed, or a refusal saying why.

    python -m lila_golf record runs/s1337 runs/s42 runs/s7 --name "CPU baseline" \\
        --track track_cpu_10min --author "A. Person" --github-id aperson --blurb "..."

Every number in submission.json is copied from the logs at their precision (8 decimals); the
folder appears complete or not at all (written beside it, then renamed).
"""
from __future__ import annotations

import datetime
import json
import re
import shutil
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from ..bundle import REPO_ROOT
from .folder import (ARTIFACT_LIMIT_BYTES, CODE_NAME, DATE, PER_SEED_KEYS, TRACKS, limit_problems, mean8,
                     official_val_targets, safe_word, sha256_file, std8, train_time_within, val_coverage)
from .logs import RecordError, SeedRun, key_values, parse_run_log


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
    safe_word(run.seed, f"{log}: seed")
    scheme, codec = safe_word(run.config.get("quant_scheme"), "quant_scheme"), safe_word(run.config.get("codec"), "codec")
    artifact = run_dir / f"final_model.{scheme}.{codec}.lgz"
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


def _check_track_limits(runs: list[RecordedRun], track: str) -> None:
    for r in runs:
        if bad := limit_problems(r.run, TRACKS[track]):
            raise RecordError(f"over the {track} time limits: " + "; ".join(bad))


def _label_from_data(run: SeedRun) -> str:
    """An older log's data label, decided now from the val tokens at the data_path it names."""
    from ...core.data import ShardError, data_source_label, load_tokenizer, load_val_tokens, shard_file
    try:
        tokens = load_val_tokens(shard_file(run.config.get("data_path", ""), "val"))
        sp = load_tokenizer(run.config.get("tokenizer_path", ""))
    except (ShardError, ValueError) as exc:
        raise RecordError(f"{run.log_path}: the log predates data labels and its data cannot be read to decide "
                          f"one ({exc})") from None
    return data_source_label(tokens, sp)


def _check_track_data(runs: list[RecordedRun], track: str) -> None:
    """Every run's data label (from its score line; older logs: from the data they name) fits the track."""
    for r in runs:
        if r.run.data_label is None:
            r.run.data_label = _label_from_data(r.run)
        if TRACKS[track].fineweb and r.run.data_label != "fineweb":
            raise RecordError(f"{r.run.log_path}: scored on data:{r.run.data_label}, not FineWeb: {track} takes "
                              f"FineWeb scores only (use track_non_record_16mb)")


def _hardware(run: SeedRun) -> str:
    tok = key_values(run.device.split())
    return (f"{tok.get('device', '?')} {tok.get('device_name', '?')}, "
            f"world_size {tok.get('world_size', '?')}, {tok.get('threads', '?')} threads")


def _seed_key(seed: str):
    """Numeric seeds sort and serialise as numbers (2 before 10)."""
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
            "score_key": r.run.score_key, "phases": r.run.phases, "targets": r.run.targets, "data": r.run.data_label,
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
            "full_val_set": all(r.run.targets is not None and r.run.targets == official_val_targets(r.run) for r in runs),
            "val_targets": min((r.run.targets for r in runs if r.run.targets is not None), default=None),
            "val_targets_official": official_val_targets(runs[0].run),
            "data": runs[0].run.data_label,
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
    from ...core.config import Hyperparameters

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
    world = key_values(run.device.split()).get("world_size", "1")
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
    val_note = val_coverage(first)
    if first.score_source == "final_submitted":
        score_note = (f"the `final_submitted` line of each log (evaluation phases {', '.join(first.phases)}; its "
                      f"eval time covers all of them)")
    else:
        score_note = f"the `{sub['score_key']}` line of each log (older logs: no final_submitted line)"
    limits = (f"training {rules.train_s:.0f} s, evaluation {rules.eval_s:.0f} s" if rules.train_s else "no time limit")
    lines = [f"# {sub['name']}", "", sub["blurb"] or "", "",
             f"Track `{sub['track']}` (limits: {limits}, artifact {ARTIFACT_LIMIT_BYTES:,} bytes).",
             f"Measured on: {sub['hardware']} ({sub['software']}).",
             f"Author: {sub['author']} ({sub['github_id']}). Created {sub['date']} by `python -m lila_golf record`.",
             "", "## Results", "",
             f"Score: {score_note}: the model reloaded from its artifact on disk and evaluated on {val_note}.",
             "", *_results_table(sub), "",
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
    src = REPO_ROOT / "requirements.txt"
    if not src.is_file():
        raise RecordError(f"{src}: the repository's requirements.txt is missing")
    lines = [l for l in src.read_text(encoding="utf-8").splitlines() if not l.strip().startswith("-e")]
    return "\n".join(lines) + "\n"


def folder_name(date: str, name: str) -> str:
    """`<date>_<Name>` with anything but letters, digits, '.' and '-' turned into '_'; the date must
    be a real YYYY-MM-DD and the name must keep at least one letter or digit."""
    try:
        datetime.date.fromisoformat(date if DATE.match(str(date)) else "")
    except (TypeError, ValueError):
        raise RecordError(f"--date {date!r} is not a date YYYY-MM-DD") from None
    clean = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_.")
    if not re.search(r"[A-Za-z0-9]", clean):
        raise RecordError(f"--name {name!r} has no letter or digit to name the folder with")
    return f"{date}_{clean}"


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
    _check_track_data(runs, track)
    dest = Path(out) / track / folder_name(date, name)
    if dest.exists():
        raise RecordError(f"{dest} already exists: a record is never overwritten")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = {}
    for r in runs:
        names[r.run.seed] = (f"train_seed{r.run.seed}.log", f"final_model_seed{r.run.seed}.{r.artifact.name[len('final_model.'):]}")
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


def add_record_parser(subparsers) -> None:
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
