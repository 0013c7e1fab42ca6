"""`preflight`: what a paid 8xH100 run needs, checked before it starts (no training).

    PRESET=record DATA_PATH=data/datasets/fineweb10B_sp1024 TOKENIZER_PATH=... python -m lila_golf preflight
    python -m lila_golf preflight --world-size 8 --reserve-seconds 20

One line per check, `PASS`, `WARN` or `FAIL`, then a verdict; exit 1 on any FAIL. Checks: data and
tokenizer present (sha256 of the tokenizer and of the val shards), the tokenizer exact under the
byte rules, val targets and bytes, the preset's parameter count, the code bytes of the file a record
submits (record file, minified and packed), the projected artifact bytes against 16,000,000, the
step budget (training seconds minus the GPTQ reserve), the global batch at this world size, and
the list of collectives in the bundled code.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from ..core.config import ARTIFACT_LIMIT_BYTES, Hyperparameters, environment
from .bundle import REPO_ROOT, build_bundle, build_file
from .records.folder import sha256_file

PROJECTION = REPO_ROOT / "benchmarks" / "results" / "record_export.json"
COLLECTIVE_HELPERS = ("all_reduce_", "broadcast_", "broadcast_bytes", "barrier")


def check_data(hp) -> list[tuple[str, str, str]]:
    from ..core.data import ShardError, shard_file, shard_paths
    rows = []
    for split in ("val", "train"):
        try:
            paths = shard_paths(shard_file(hp.data_path, split))
        except ShardError as exc:
            rows.append(("FAIL", f"{split}_shards", str(exc)))
            continue
        detail = f"{len(paths)} files in {hp.data_path}"
        if split == "val":
            detail += " sha256 " + ",".join(sha256_file(p)[:16] for p in paths)
        rows.append(("PASS", f"{split}_shards", detail))
    return rows


def check_tokenizer_and_val(hp) -> list[tuple[str, str, str]]:
    from ..core.data import (ShardError, TokenizerError, build_byte_tables, check_tokenizer_exact, load_tokenizer,
                             load_val_tokens, shard_file, target_bytes)
    if not Path(hp.tokenizer_path).is_file():
        return [("FAIL", "tokenizer", f"{hp.tokenizer_path} not found")]
    rows = [("PASS", "tokenizer", f"{hp.tokenizer_path} sha256 {sha256_file(hp.tokenizer_path)[:16]}")]
    try:
        sp = load_tokenizer(hp.tokenizer_path)
        check_tokenizer_exact(sp, hp.tokenizer_path)
        if sp.vocab_size() != hp.vocab_size:
            raise TokenizerError(f"vocab {sp.vocab_size()} but VOCAB_SIZE={hp.vocab_size}")
        tokens = load_val_tokens(shard_file(hp.data_path, "val"), hp.vocab_size)
        nbytes = int(target_bytes(tokens[:-1], tokens[1:], build_byte_tables(sp, hp.vocab_size)).sum())
        rows.append(("PASS", "val", f"targets:{len(tokens) - 1} bytes:{nbytes} (the official set: 62,021,845 targets)"))
    except (TokenizerError, ShardError, ValueError) as exc:
        rows.append(("FAIL", "tokenizer_or_val", str(exc)))
    return rows


def count_params(hp) -> int:
    import torch
    from ..core.config import GPTConfig
    from ..core.model import GPT
    with torch.device("meta"):  # shapes only: nothing allocated
        return sum(p.numel() for p in GPT(GPTConfig.from_hparams(hp)).parameters())


def projected_model_bytes(params: int) -> tuple[int | None, str]:
    """Bits per parameter of the measured export (benchmarks/record_export.py) times this count."""
    if not PROJECTION.exists():
        return None, "no measured export: run benchmarks/record_export.py"
    m = json.loads(PROJECTION.read_text())
    if not m.get("bytes_model") or not m.get("model_params"):
        return None, f"{PROJECTION.name} has no bytes_model"
    bits = 8 * m["bytes_model"] / m["model_params"]
    return int(params * bits / 8), (f"{bits:.3f} bits/param measured on PRESET={m.get('preset', '?')} "
                                    f"({int(m['model_params']):,} params, {PROJECTION.name})")


def collectives_in_bundle(preset: str | None) -> list[str]:
    """`function: helper` for every collective call in the bundled file."""
    found = []
    for fn in ast.parse(build_bundle(preset)).body:
        if isinstance(fn, (ast.FunctionDef, ast.ClassDef)) and fn.name not in COLLECTIVE_HELPERS:
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in COLLECTIVE_HELPERS:
                    found.append(f"{fn.name}:{node.func.id}")
    return sorted(set(found))


def check_budget(hp, world: int, reserve_s: float | None) -> list[tuple[str, str, str]]:
    from ..core.train import micro_batches
    micro = micro_batches(hp.grad_accum_total, world)
    local = hp.train_batch_tokens // (world * micro) // hp.train_seq_len * hp.train_seq_len
    rows = [("PASS" if local * world * micro == hp.train_batch_tokens else "FAIL", "global_batch",
             f"{hp.train_batch_tokens} tokens = {world} ranks x {micro} micro-batches x {local} tokens")]
    if reserve_s is None:
        reserve_s = hp.gptq_reserve_seconds if hp.gptq_reserve_seconds >= 0 else None
    if hp.quant_scheme.endswith("_gptq") and reserve_s is None:
        rows.append(("WARN", "step_budget", f"{hp.max_wallclock_seconds:.0f} s minus a GPTQ reserve timed at run start "
                                            f"(pass --reserve-seconds to fix it here)"))
    else:
        train_s = hp.max_wallclock_seconds - (reserve_s or 0.0)
        rows.append(("PASS" if train_s > 0 else "FAIL", "step_budget",
                     f"training {train_s:.1f} s = {hp.max_wallclock_seconds:.0f} s cap - {reserve_s or 0.0:.1f} s GPTQ reserve"))
    return rows


def preflight(hp, world: int, reserve_s: float | None) -> list[tuple[str, str, str]]:
    rows = check_data(hp) + check_tokenizer_and_val(hp)
    params = count_params(hp)
    rows.append(("PASS", "model_params", f"{params:,} ({hp.preset})"))
    code = len(build_file(hp.preset, packed=True, minified=True).encode())
    rows.append(("PASS", "bytes_code", f"{code} (the packed, minified record file of PRESET={hp.preset})"))
    model_bytes, how = projected_model_bytes(params)
    if model_bytes is None:
        rows.append(("WARN", "bytes_total", how))
    else:
        total = model_bytes + code
        rows.append(("PASS" if total <= ARTIFACT_LIMIT_BYTES else "FAIL", "bytes_total",
                     f"projected {total:,} of {ARTIFACT_LIMIT_BYTES:,} ({how})"))
    rows += check_budget(hp, world, reserve_s)
    rows.append(("PASS", "collectives", " ".join(collectives_in_bundle(hp.preset))))
    return rows


def add_preflight_parser(subparsers) -> None:
    p = subparsers.add_parser("preflight", help="check a record run's inputs and budgets before it starts",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--world-size", type=int, default=8)
    p.add_argument("--reserve-seconds", type=float, default=None, help="GPTQ reserve to assume (default: the config's)")
    p.set_defaults(func=run_preflight)


def run_preflight(args) -> int:
    hp = Hyperparameters.from_env(environment())
    rows = preflight(hp, args.world_size, args.reserve_seconds)
    for verdict, name, detail in rows:
        print(f"{verdict} {name}: {detail}")
    failed = [name for verdict, name, _ in rows if verdict == "FAIL"]
    print(f"preflight:{'FAIL' if failed else 'PASS'} " + (f"failed:{','.join(failed)}" if failed else f"checks:{len(rows)}"))
    return 1 if failed else 0
