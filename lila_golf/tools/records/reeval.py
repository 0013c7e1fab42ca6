"""`verify --reeval`: reload each seed's artifact and re-score its submitted line on the data it names.

    python -m lila_golf verify records/track_cpu_10min/<record> --reeval [--data-path DIR] [--tokenizer T]

For every seed: the artifact (inside the folder, decoded within its caps, tokenizer hash checked)
is rebuilt into the model, the val shards named by the log's config (data_path, or --data-path)
are read and cut to its val_max_tokens, the data label is decided from those tokens, and every phase
of the final evaluation is run again with the code and config the trainer ran (core/final_eval.py:
plain, sliding, TTT, n-gram). The figures printed at the log's precision
(val_loss and val_bpb at 8 decimals, targets and bytes exactly) must be equal; the data label must
equal the log's. Scores are re-run in float32 on the device given (default CPU): a log written on
a GPU under bf16 autocast is re-run there (--device cuda), or it differs.

A logged phase that the config does not run is reported as a failure naming it: a figure that
cannot be reproduced is not taken as checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .folder import resolve_inside
from .logs import RecordError, SeedRun


def _reeval_plain(model, tokens, tables, cfg: dict, device, autocast) -> dict:
    """Logs from before the final evaluation: their roundtrip line came from eval_val_plain."""
    from ...core.data import target_bytes
    from ...core.evaluate import eval_val_plain
    seq_len, batch = int(cfg["train_seq_len"]), int(cfg.get("val_batch_tokens", 65536))
    res = eval_val_plain(model, tokens, target_bytes(tokens[:-1], tokens[1:], tables), seq_len, device,
                         batch_seqs=max(1, batch // seq_len), autocast=autocast)
    return {"plain": res}


def _rerun_final_evaluation(model, tokens, tables, cfg: dict, device, autocast) -> dict:
    """Every phase of the run's final evaluation, by the trainer's own code and config (the log's
    `config` line): phase name -> {val_loss, val_bpb, tokens, bytes}."""
    from ...core.config import Hyperparameters
    from ...core.final_eval import final_evaluation
    hp = Hyperparameters.from_env({k.upper(): str(v) for k, v in cfg.items()})
    result = final_evaluation(model, tokens, tables, hp, device, autocast, lambda line: None)
    return {p["name"]: {**p, "tokens": p["targets"]} for p in result["phases"]}


def _logged_phases(run: SeedRun) -> list[tuple[str, dict]]:
    """(phase, the figures the log printed for it): every eval_phase line, and the submitted score
    as the last phase; older logs: the roundtrip line as the plain phase."""
    if run.score_source != "final_submitted":
        rt = run.roundtrip
        return [("plain", {"val_loss": rt.get("val_loss"), "val_bpb": rt.get("val_bpb"), "targets": rt.get("tokens"),
                           "bytes": rt.get("bytes")})]
    phases = [(p.get("name", "?"), p) for p in run.eval_phases]
    return phases + [(run.phases[-1] if run.phases else "?", run.submitted)]


def _reeval_data(run: SeedRun, data_path, tokenizer, vocab_size: int):
    """(val tokens as the run cut them, tokenizer path, data label decided from the tokens)."""
    from ...core.data import data_source_label, load_tokenizer, load_val_tokens, shard_file
    data = data_path or run.config.get("data_path")
    tok = tokenizer or run.config.get("tokenizer_path")
    if not data or not tok:
        raise RecordError(f"{run.log_path.name}: the log names no data_path/tokenizer_path; give --data-path/--tokenizer")
    pattern = shard_file(data, "val") if Path(data).is_dir() else data
    tokens = load_val_tokens(pattern, vocab_size)
    limit = int(run.config.get("val_max_tokens", "0") or 0)
    if limit and limit + 1 < len(tokens):
        tokens = tokens[:limit + 1]
    tokens = np.asarray(tokens, dtype=np.int64)
    return tokens, tok, data_source_label(tokens, load_tokenizer(tok))


def _compare(phase: str, logged: dict, got: dict) -> list[str]:
    diffs = []
    for key, fmt in (("val_loss", "{:.8f}"), ("val_bpb", "{:.8f}")):
        if logged.get(key) is not None and fmt.format(got[key]) != logged[key]:
            diffs.append(f"{phase} {key} {fmt.format(got[key])} != logged {logged[key]}")
    for key, got_key in (("targets", "tokens"), ("bytes", "bytes")):
        if logged.get(key) is not None and str(got[got_key]) != str(logged[key]):
            diffs.append(f"{phase} {key} {got[got_key]} != logged {logged[key]}")
    return diffs


def reeval_seed(folder: Path, run: SeedRun, artifact_name: str, *, data_path=None, tokenizer=None,
                device="cpu") -> tuple[list[str], str]:
    """(differences, what was re-scored) for one seed; raises RecordError when it cannot be re-run."""
    from ...core.artifact import ArtifactError, read_artifact_header
    from ..generate import GenerateError, load_model

    artifact = resolve_inside(folder, artifact_name, f"seed {run.seed} artifact")
    try:
        vocab = int(read_artifact_header(artifact)["model_config"]["vocab_size"])
        tokens, tok, label = _reeval_data(run, data_path, tokenizer, vocab)
        model, _ = load_model(artifact, Path(tok))
    except (ArtifactError, GenerateError, ValueError, KeyError, OSError) as exc:
        raise RecordError(f"seed {run.seed}: cannot re-evaluate ({exc})") from None
    from ...core.data import build_byte_tables, load_tokenizer
    tables = build_byte_tables(load_tokenizer(tok), vocab)
    device = torch.device(device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None
    model = model.to(device)
    diffs = [] if run.data_label in (None, label) else [f"data label {label} (from the tokens) != logged {run.data_label}"]
    done = []
    rerun = _rerun_final_evaluation if run.score_source == "final_submitted" else _reeval_plain
    got = rerun(model, tokens, tables, run.config, device, autocast)
    for phase, logged in _logged_phases(run):
        if phase not in got:
            diffs.append(f"phase {phase!r} was logged but the run's config runs no such phase")
            continue
        diffs += _compare(phase, logged, got[phase])
        entry = f"{phase} val_bpb:{got[phase]['val_bpb']:.8f}"
        if entry not in done:  # the submitted line repeats its last phase
            done.append(entry)
    return diffs, f"seed {run.seed} ({len(tokens) - 1} targets, data:{label}): " + ", ".join(done)


def reeval_record(folder: Path, runs: list[SeedRun], per_seed: dict, fmt: str, *, data_path=None,
                  tokenizer=None, device="cpu") -> list:
    """One Check per seed: PASS when every re-scored figure equals the log's."""
    from .verify import Check

    if fmt != "lila":
        return [Check("reeval", "N/A", "official-format folders hold no artifact to re-evaluate")]
    checks, by_seed = [], {r.seed: r for r in runs}
    for seed, (_, artifact) in per_seed.items():
        run = by_seed.get(seed)
        if run is None:
            checks.append(Check(f"reeval.{seed}", "FAIL", f"seed {seed}: no log"))
            continue
        try:
            diffs, what = reeval_seed(folder, run, artifact, data_path=data_path, tokenizer=tokenizer, device=device)
        except RecordError as exc:
            checks.append(Check(f"reeval.{seed}", "FAIL", str(exc)))
            continue
        checks.append(Check(f"reeval.{seed}", "FAIL" if diffs else "PASS",
                            what + (": " + "; ".join(diffs) if diffs else ": equal to the log")))
    return checks
