"""Evaluate an artifact on validation shards with any scorer: `python -m lila_golf eval`.

    python -m lila_golf eval runs/<id>                                  # all from the run's config.json
    python -m lila_golf eval runs/<id> --scorer model+ngram --stride 64 --max-tokens 1000000
    python -m lila_golf eval final_model.int8.zlib.lgz --data-path DIR_OR_SHARD_OR_GLOB --tokenizer T.model
    torchrun --standalone --nproc_per_node=8 -m lila_golf eval runs/<id> --final --set EVAL_STRIDE=64   # tools/evalfinal.py
    python -m lila_golf eval runs/<id> --plan --set TTT_MODE=doc --set NGRAM_ORDER=8                    # 8xH100 projection

A run folder gives its artifact (the single final_model.*.lgz in it), data_path, tokenizer_path and
train_seq_len from config.json; flags override them, and an artifact file reads the config.json beside
it when there is one. seq_len is --seq-len, else the artifact header's train_seq_len, else the run
config's: never a default (the eval_config line says where it came from). --final and --plan are the
final evaluation of train_gpt.py and its time projection (lila_golf/tools/evalfinal.py); the
streaming scorers below run on one process. The artifact is read by lila_golf.core.artifact.load_artifact
(never unpickled; its tokenizer sha256 must match). Every target of the val tokens is scored once, in one left-to-right
pass of the scorer (lila_golf/core/scoring.py protocol), with exact bytes (data.build_byte_tables);
--max-tokens N keeps the first N targets and says so. Prints

    val_loss:<nats/token> val_bpb:<bits/byte> tokens:<targets> bytes:<bytes> tokens_per_s:<targets/s> ...

Scorers (--scorer): model (sliding windows of stride S; S = seq_len is the plain evaluation),
model+ngram (the learned mixture with the per-token online n-gram, lila_golf/core/ngrammix.py), model+ttt
(stream score-first LoRA TTT, lila_golf/core/ttt.py), model+doc_ttt and model+phased_ttt (the final
evaluation's per-document TTT), model+ngram+<ttt> (the mixture over a TTT scorer), ngram (no model).
Importing this module registers the model-based names with lila_golf.tools.audit, so `python -m lila_golf audit --scorer model+ttt
--artifact A SHARD` audits them. Exit codes: 0 done, 2 bad input (clear message, no traceback).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.artifact import read_artifact_header
from .audit import register_scorer
from ..core.data import (bits_per_byte, build_byte_tables, data_source_label, load_tokenizer, load_val_tokens,
                         shard_file, target_bytes, val_target_bytes)
from .generate import load_model, resolve_seq_len, resolve_tokenizer
from ..core.ngrammix import MixerConfig, NgramMixScorer
from ..core.scoring import ModelScorer, NgramScorer, run_scorer
from ..core.ttt import DEFAULT_LORA_TARGETS, DocTTTScorer, TTTScorer

EVAL_SCORERS = ("model", "model+ngram", "model+ttt", "model+ngram+ttt", "model+doc_ttt", "model+ngram+doc_ttt",
                "model+phased_ttt", "model+ngram+phased_ttt", "ngram")
DEFAULT_STRIDE = 64
# defaults of the TTT flags (also used by the audit, whose parser has no --ttt-* flags)
TTT_DEFAULTS = dict(ttt_lr=1e-3, ttt_rank=8, ttt_epochs=2, ttt_chunk=4096, ttt_targets=",".join(DEFAULT_LORA_TARGETS))
# the per-document and phased TTT and the n-gram mixer take the final evaluation's settings
# (core/config.py defaults; the phases of the streaming scorer end after these document counts)
DOC_TTT_DEFAULTS = dict(chunk=64, lora_rank=8, lr=3e-3, phase_lr=1e-3, phase_batch=16)
PHASE_ENDS_DEFAULT = (20, 40, 60)


class EvalError(ValueError):
    """Bad input to the eval command: a run folder, data path or flag it cannot use."""


@dataclass
class EvalInputs:
    artifact: Path
    tokenizer: Path
    seq_len: int
    data_pattern: str | None  # shard glob, None when neither --data-path nor the run config gives one
    seq_len_source: str = "flag"  # where seq_len came from: flag, artifact header or run config
    config: dict | None = None  # the run's config.json ({} when absent)
    header: dict | None = None  # the artifact header


def _eval_run_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalError(f"{path}: unreadable run config ({exc})") from None
    if not isinstance(config, dict):
        raise EvalError(f"{path}: run config is not a JSON object")
    return config


def _eval_find_artifact(target: Path) -> Path:
    """The artifact file itself, or the single final_model.*.lgz of a run folder."""
    if target.is_file():
        return target
    if not target.is_dir():
        raise EvalError(f"{target}: no such artifact file or run folder")
    found = sorted(target.glob("final_model.*.lgz"))
    if len(found) != 1:
        what = "no final_model.*.lgz" if not found else f"{len(found)} artifacts ({', '.join(p.name for p in found)})"
        raise EvalError(f"{target}: run folder holds {what}; pass the artifact file")
    return found[0]


def _eval_data_pattern(given: str | None, recorded: str | None, folder: Path) -> str | None:
    """Shard glob from --data-path or the config's data_path: a folder means its fineweb_val_*.bin."""
    candidates = [given] if given else ([recorded, str(folder / recorded)] if recorded else [])
    for path in candidates:
        if os.path.isdir(path):
            return shard_file(path, "val")
        if glob.glob(path):
            return path
    if candidates:
        raise EvalError(f"data path {candidates[0]!r}: no such folder, shard or matching files")
    return None


def resolve_eval_inputs(target, data_path=None, tokenizer=None, seq_len=None) -> EvalInputs:
    """Artifact, tokenizer, seq_len and shard glob of an artifact file or run folder (flags win)."""
    target = Path(target)
    artifact = _eval_find_artifact(target)
    folder = target if target.is_dir() else artifact.parent
    config = _eval_run_config(folder)
    header = read_artifact_header(artifact)  # a foreign file fails here, before anything is decoded
    tokenizer_path = resolve_tokenizer(artifact, header, tokenizer)
    seq_len, source = eval_seq_len(artifact, header, config, seq_len)
    return EvalInputs(artifact, tokenizer_path, seq_len, _eval_data_pattern(data_path, config.get("data_path"), folder),
                      source, config, header)


def eval_seq_len(artifact: Path, header: dict, config: dict, given: int | None) -> tuple[int, str]:
    """(seq_len, where it came from): --seq-len, else the artifact header's train_seq_len, else the run
    config's; no default: the windows a model was trained on are not guessed."""
    for value, source in ((given, "flag"), (header.get("train_seq_len"), "artifact header"),
                          (config.get("train_seq_len"), "run config")):
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise EvalError(f"{artifact}: seq_len from the {source} must be an integer >= 1, got {value!r}")
            return value, source
    raise EvalError(f"{artifact}: the artifact header has no train_seq_len and there is no run config.json "
                    f"beside it; pass --seq-len (the TRAIN_SEQ_LEN of the run)")


def _eval_ttt_options(args) -> dict:
    """TTT settings from the namespace (flags of this command), defaults where absent (audit)."""
    opts = {k: getattr(args, k, None) for k in TTT_DEFAULTS}
    if opts["ttt_chunk"] is None and getattr(args, "chunk_size", None):
        opts["ttt_chunk"] = args.chunk_size  # the audit's chunks: adapters then change between its chunks
    return {k: TTT_DEFAULTS[k] if v is None else v for k, v in opts.items()}


def build_scorer_factory(name: str, model, *, seq_len: int, stride: int, vocab_size: int, device="cpu",
                         ngram_order: int = 10, ttt: dict | None = None, autocast=None, batch_size: int = 32,
                         bos_id: int = 1, phase_ends=PHASE_ENDS_DEFAULT):
    """Zero-argument factory making a fresh scorer `name` (one of EVAL_SCORERS) over `model`.
    model+ngram* use the learned mixture (core/ngrammix.py, n-gram order `ngram_order`); *doc_ttt and
    *phased_ttt the per-document TTT (documents start at `bos_id`; phases end after `phase_ends` documents)."""
    if name not in EVAL_SCORERS:
        raise EvalError(f"unknown scorer {name!r}: use one of {', '.join(EVAL_SCORERS)}")
    ttt = {**TTT_DEFAULTS, **(ttt or {})}
    targets = ttt["ttt_targets"]
    targets = tuple(t for t in targets.split(",") if t) if isinstance(targets, str) else tuple(targets)

    def logits_fn(x):
        if autocast is None:
            return model(x)
        with autocast():
            return model(x)

    def make_model_part():
        if "ttt" not in name:
            return ModelScorer(logits_fn, seq_len, stride, vocab_size, device, batch_size)
        if "doc_ttt" in name or "phased_ttt" in name:
            phases = tuple(phase_ends) if "phased" in name else ()
            return DocTTTScorer(model, seq_len, bos_id, vocab_size, phase_ends=phases, autocast=autocast,
                                **{**DOC_TTT_DEFAULTS, "chunk": min(DOC_TTT_DEFAULTS["chunk"], seq_len)})
        return TTTScorer(model, seq_len, stride, vocab_size, device=device, lora_rank=ttt["ttt_rank"],
                         lr=ttt["ttt_lr"], epochs=ttt["ttt_epochs"], chunk_tokens=ttt["ttt_chunk"],
                         targets=targets, batch_size=batch_size, autocast=autocast)

    def factory():
        if name == "ngram":
            return NgramScorer(vocab_size, max_order=ngram_order)
        if "ngram" in name:
            return NgramMixScorer(make_model_part(), ngram_order, mixer=MixerConfig(max_order=ngram_order))
        return make_model_part()

    if name != "ngram":  # bad stride or TTT flags fail now with a clear message, not mid-evaluation
        make_model_part()
    return factory


def _eval_audit_builder(name: str):
    """audit.register_scorer builder: the model from --artifact (file or run folder), on the CPU."""
    def build(args):
        if not getattr(args, "artifact", None):
            raise EvalError(f"scorer {name!r} needs --artifact (an artifact file or run folder)")
        inputs = resolve_eval_inputs(args.artifact, None, getattr(args, "tokenizer", None), getattr(args, "seq_len", None))
        model, _ = load_model(inputs.artifact, inputs.tokenizer)
        stride = getattr(args, "stride", None) or min(DEFAULT_STRIDE, inputs.seq_len)
        return build_scorer_factory(name, model, seq_len=inputs.seq_len, stride=stride,
                                    vocab_size=model.cfg.vocab_size, ngram_order=getattr(args, "ngram_order", 10),
                                    ttt=_eval_ttt_options(args), bos_id=load_tokenizer(inputs.tokenizer).bos_id())
    return build


for _eval_name in EVAL_SCORERS:
    if _eval_name != "ngram":  # audit registers its own pure n-gram scorer
        register_scorer(_eval_name, _eval_audit_builder(_eval_name))


class _EvalProgress:
    """Scorer proxy driving a tqdm progress bar on stderr (disabled: a plain pass-through)."""

    def __init__(self, scorer, total: int, enabled: bool):
        from tqdm import tqdm
        self.scorer, self.vocab_size = scorer, scorer.vocab_size
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, desc="eval", disable=not enabled, file=sys.stderr)

    def begin(self, first_token: int) -> None:
        self.scorer.begin(first_token)

    def score_chunk(self, chunk, probe=()):
        out = self.scorer.score_chunk(chunk, probe)
        self.bar.update(len(chunk))
        return out


def evaluate_tokens(factory, tokens: np.ndarray, byte_tables, chunk_size: int, progress: bool = False) -> dict:
    """One pass of a fresh scorer over tokens -> dict(val_loss, val_bpb, tokens, bytes, tokens_per_s, seconds)."""
    tokens = np.asarray(tokens).astype(np.int64)
    scorer = _EvalProgress(factory(), len(tokens) - 1, progress)
    t0 = time.perf_counter()
    logp, _ = run_scorer(scorer, tokens, chunk_size)
    scorer.bar.close()
    seconds = time.perf_counter() - t0
    if not isinstance(byte_tables, np.ndarray):  # per-target bytes given (CaseOps sidecar) or the byte rule
        byte_tables = target_bytes(tokens[:-1], tokens[1:], byte_tables)
    nll, n_bytes = -float(logp.sum()), int(byte_tables.sum())
    return dict(val_loss=nll / len(logp), val_bpb=bits_per_byte(nll, n_bytes), tokens=len(logp), bytes=n_bytes,
                tokens_per_s=len(logp) / max(seconds, 1e-9), seconds=seconds)


def _eval_check_flags(args) -> None:
    for flag in ("stride", "max_tokens", "seq_len", "chunk_size", "ttt_rank", "ttt_chunk", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise EvalError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.ttt_lr < 0 or args.ttt_epochs < 0 or args.ngram_order < 1:
        raise EvalError("--ttt-lr and --ttt-epochs must be >= 0 and --ngram-order >= 1")


def _eval_setup(args):
    """Everything the pass needs: (factory, tokens, byte tables, chunk_size, config lines to print, data
    label decided from the tokens)."""
    _eval_check_flags(args)
    if args.target is None:
        raise EvalError("pass an artifact file or run folder")
    inputs = resolve_eval_inputs(args.target, args.data_path, args.tokenizer, args.seq_len)
    if inputs.data_pattern is None:
        raise EvalError(f"{args.target}: no data_path in a run config; pass --data-path")
    model, _ = load_model(inputs.artifact, inputs.tokenizer)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None
    seq_len = inputs.seq_len
    stride = args.stride or min(DEFAULT_STRIDE, seq_len)
    if stride > seq_len:
        raise EvalError(f"--stride {stride} exceeds seq_len {seq_len}")
    vocab_size = model.cfg.vocab_size
    tokens = load_val_tokens(inputs.data_pattern, vocab_size)
    subset = bool(args.max_tokens and args.max_tokens + 1 < len(tokens))
    if subset:
        tokens = tokens[:args.max_tokens + 1]
    sp = load_tokenizer(inputs.tokenizer)
    byte_tables = build_byte_tables(sp, vocab_size)
    tables = byte_tables
    if byte_tables.sidecar_required:  # CaseOps: the original text's bytes, from fineweb_val_bytes_*.bin (or an error)
        tables = val_target_bytes(tokens, byte_tables, inputs.data_pattern)
    factory = build_scorer_factory(args.scorer, model.to(device), seq_len=seq_len, stride=stride,
                                   vocab_size=vocab_size, device=device, ngram_order=args.ngram_order,
                                   ttt=_eval_ttt_options(args), autocast=autocast, batch_size=args.batch_size,
                                   bos_id=byte_tables.bos_id)
    chunk_size = max(1, args.chunk_size // seq_len) * seq_len  # whole windows: stride = seq_len is plain
    line = (f"eval_config artifact:{inputs.artifact} scorer:{args.scorer} data:{inputs.data_pattern} "
            f"seq_len:{seq_len} seq_len_from:{inputs.seq_len_source.replace(' ', '_')} stride:{stride} "
            f"chunk_size:{chunk_size} device:{device}")
    if "ngram" in args.scorer:
        line += f" ngram_order:{args.ngram_order}"
    if "ttt" in args.scorer:
        line += (f" ttt_lr:{args.ttt_lr} ttt_rank:{args.ttt_rank} ttt_epochs:{args.ttt_epochs} "
                 f"ttt_chunk:{args.ttt_chunk} ttt_targets:{args.ttt_targets}")
    if subset:
        line += f"\nval_subset:first_{args.max_tokens}_targets (NOT the full val set)"
    return factory, tokens, tables, chunk_size, line, data_source_label(tokens, sp)


def run_eval(args) -> int:
    """Entry point of `python -m lila_golf eval`: prints the config, then val_loss/val_bpb/tokens/bytes;
    with --final the final evaluation's phases, with --plan their projected time (tools/evalfinal.py)."""
    if args.final or args.plan:
        from .evalfinal import run_final, run_plan
        return (run_plan if args.plan else run_final)(args, resolve_eval_inputs)
    try:
        factory, tokens, tables, chunk_size, line, data_label = _eval_setup(args)
    except (ValueError, OSError) as exc:  # ArtifactError, ShardError, TokenizerError, GenerateError, EvalError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line, flush=True)
    res = evaluate_tokens(factory, tokens, tables, chunk_size, progress=not args.quiet)
    print(f"val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} tokens:{res['tokens']} bytes:{res['bytes']} "
          f"tokens_per_s:{res['tokens_per_s']:.0f} eval_time:{1000 * res['seconds']:.0f}ms data:{data_label}",
          flush=True)
    return 0


def _eval_flag(parser, name: str, **kwargs) -> None:
    """--a-b, also accepted as --a_b."""
    names = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register `eval` on the package CLI."""
    p = subparsers.add_parser("eval", help="evaluate an artifact (or run folder) on val shards with any scorer",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("target", metavar="ARTIFACT_OR_RUN", nargs="?", default=None,
                   help="a .lgz artifact or a run folder with config.json (--plan may use --preset instead)")
    _eval_flag(p, "data-path", default=None, help="val shards: folder (its fineweb_val_*.bin), file or glob")
    _eval_flag(p, "tokenizer", default=None, help="SentencePiece model (default: the run's tokenizer_path)")
    _eval_flag(p, "scorer", default="model", choices=EVAL_SCORERS)
    _eval_flag(p, "stride", type=int, default=None, help=f"sliding-window stride (default min({DEFAULT_STRIDE}, seq_len))")
    _eval_flag(p, "seq-len", type=int, default=None, help="window length (default: the run's train_seq_len)")
    _eval_flag(p, "max-tokens", type=int, default=None, help="score only the first N targets (labelled)")
    _eval_flag(p, "chunk-size", type=int, default=8192,
               help="tokens per score_chunk call, rounded down to whole windows (n-gram counts update per chunk)")
    _eval_flag(p, "batch-size", type=int, default=32, help="windows per forward pass")
    _eval_flag(p, "ngram-order", type=int, default=10, help="max n-gram order (ngram scorers)")
    _eval_flag(p, "ttt-lr", type=float, default=TTT_DEFAULTS["ttt_lr"], help="Adam lr of the LoRA adapters")
    _eval_flag(p, "ttt-rank", type=int, default=TTT_DEFAULTS["ttt_rank"], help="LoRA rank")
    _eval_flag(p, "ttt-epochs", type=int, default=TTT_DEFAULTS["ttt_epochs"], help="adapter steps per TTT chunk")
    _eval_flag(p, "ttt-chunk", type=int, default=TTT_DEFAULTS["ttt_chunk"], help="tokens per TTT chunk")
    _eval_flag(p, "ttt-targets", default=TTT_DEFAULTS["ttt_targets"], help="comma-separated Linear names to adapt")
    _eval_flag(p, "device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    _eval_flag(p, "quiet", action="store_true", help="no progress bar on stderr")
    _eval_flag(p, "final", action="store_true", help="run train_gpt.py's final evaluation (phases by --set; torchrun-ready)")
    _eval_flag(p, "set", action="append", metavar="KEY=VALUE",
               help="--final/--plan: a config field, e.g. EVAL_STRIDE=64, TTT_MODE=doc, NGRAM_ORDER=8 (repeatable)")
    _eval_flag(p, "plan", action="store_true", help="print the projected 8xH100 time of each final-eval phase")
    _eval_flag(p, "preset", default=None, help="--plan without an artifact: the model of this preset")
    _eval_flag(p, "world-size", type=int, default=8, help="--plan: GPUs (and n-gram ranks)")
    _eval_flag(p, "val-tokens", type=int, default=62_021_846, help="--plan: val tokens (default: the official set)")
    _eval_flag(p, "h100-flops", type=float, default=989e12, help="--plan: H100 dense BF16 peak FLOP/s")
    _eval_flag(p, "utilisation", type=float, default=0.4, help="--plan: fraction of peak for plain/sliding")
    _eval_flag(p, "ttt-utilisation", type=float, default=0.15, help="--plan: fraction of peak for TTT (small steps)")
    _eval_flag(p, "sample-tokens", type=int, default=1_000_000, help="--plan: val tokens the n-gram rate is measured on")
    p.set_defaults(func=run_eval)
    return p


def main(argv=None) -> int:
    """Standalone entry: python -m lila_golf.tools.evalcmd ARTIFACT_OR_RUN [flags]."""
    parser = argparse.ArgumentParser(prog="lila_golf.tools.evalcmd")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
