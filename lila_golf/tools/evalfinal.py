"""`eval --final`: the final evaluation of train_gpt.py on an artifact, on one process or many;
`eval --plan`: its projected time on 8xH100.

    python -m lila_golf eval runs/<id> --final --set EVAL_STRIDE=64 --set TTT_MODE=doc --set NGRAM_ORDER=8
    torchrun --standalone --nproc_per_node=2 -m lila_golf eval runs/<id> --final --set EVAL_STRIDE=64
    python -m lila_golf eval runs/<id> --plan --world-size 8 --set EVAL_STRIDE=64 --set TTT_MODE=doc

--final runs lila_golf.core.final_eval.final_evaluation (the phases plain, sliding, TTT, n-gram, each
from its config field) and prints its eval_phase lines and the final_submitted line, the same lines
a training run logs. The architecture, vocabulary and tokenizer hash come from the artifact header,
seq_len from the header (or --seq-len, or the run's config.json: the eval_config line says which);
the evaluation fields from the run's config.json, then --set KEY=VALUE (the UPPER_CASE names of
core/config.py). Under torchrun every rank scores its share and the result is the one process's.
Progress bars (tqdm) on rank 0 unless --quiet.

--plan prints, per phase, the FLOPs of the whole evaluation (val tokens --val-tokens, default the
official 62,021,846), the time they take at a stated H100 rate and utilisation divided over
--world-size GPUs, and for the CPU-bound n-gram phase the rate measured here on a sample of the val
tokens, split over the ranks as the final evaluation splits it. Every figure it prints is a
PROJECTION, labelled as such.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..core.config import PRESETS, GPTConfig, Hyperparameters, dist_env
from ..core.data import build_byte_tables, load_tokenizer, load_val_tokens
from ..core.final_eval import final_evaluation
from ..core.model import GPT
from ..core.ngrammix import MixerConfig, learned_mixture, online_ngram
from ..core.ttt import document_spans
from .generate import load_model

OFFICIAL_VAL_TOKENS = 62_021_846  # 50,000 documents (data manifest)
OFFICIAL_VAL_DOCS = 50_000
H100_BF16_FLOPS = 989e12  # H100 SXM dense BF16 tensor-core peak (NVIDIA datasheet)


class FinalEvalError(ValueError):
    """Bad input to eval --final / --plan."""


def final_hparams(config: dict, header: dict | None, seq_len: int, sets: list[str]) -> Hyperparameters:
    """The evaluation's Hyperparameters: the run config, the architecture of the artifact header,
    seq_len, then --set KEY=VALUE."""
    env = {k.upper(): str(v) for k, v in config.items() if isinstance(v, (str, int, float, bool))}
    for k, v in ((header or {}).get("model_config") or {}).items():
        env[k.upper()] = str(v)
    env["TRAIN_SEQ_LEN"] = str(seq_len)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.isupper() or key.lower() not in Hyperparameters.__dataclass_fields__:
            raise FinalEvalError(f"--set {item!r}: expected KEY=VALUE with KEY an UPPER_CASE field of core/config.py")
        env[key] = value
    return Hyperparameters.from_env(env)


def _tqdm_factory(enabled: bool):
    """progress factory for final_evaluation: one tqdm bar per phase, the previous one closed."""
    from tqdm import tqdm
    bars = []

    def make(total: int, name: str):
        if bars:
            bars.pop().close()
        bar = tqdm(total=total, desc=name, unit="tok", unit_scale=True, disable=not enabled, file=sys.stderr)
        bars.append(bar)
        return bar.update
    make.close = lambda: bars and bars.pop().close()
    return make


def run_final(args, resolve_inputs) -> int:
    """Body of eval --final (also under torchrun): 0 done, 2 bad input."""
    denv = dist_env()
    use_cuda = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    device = torch.device("cuda", denv.local_rank) if use_cuda else torch.device(args.device or "cpu")
    if denv.distributed:
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    master = denv.rank == 0
    log = (lambda line: print(line, flush=True)) if master else (lambda line: None)
    try:
        t_decode = time.perf_counter()
        setup = _final_setup(args, resolve_inputs, device)
    except (ValueError, OSError) as exc:
        if master:
            print(f"error: {exc}", file=sys.stderr)
        if denv.distributed:
            dist.destroy_process_group()
        return 2
    model, tokens, tables, hp, line = setup
    log(line)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None
    progress = _tqdm_factory(master and not args.quiet)
    try:
        final_evaluation(model, tokens, tables, hp, device, autocast, log, start_time=t_decode, progress=progress)
    finally:
        progress.close()
        if denv.distributed:
            dist.destroy_process_group()
    return 0


def _final_setup(args, resolve_inputs, device):
    if args.target is None:
        raise FinalEvalError("--final needs an artifact file or run folder")
    inputs = resolve_inputs(args.target, args.data_path, args.tokenizer, args.seq_len)
    if inputs.data_pattern is None:
        raise FinalEvalError(f"{args.target}: no data_path in a run config; pass --data-path")
    model, header = load_model(inputs.artifact, inputs.tokenizer)
    hp = final_hparams(inputs.config or {}, header, inputs.seq_len, args.set or [])
    tokens = load_val_tokens(inputs.data_pattern, hp.vocab_size).astype(np.int64)
    line = (f"eval_config artifact:{inputs.artifact} data:{inputs.data_pattern} seq_len:{hp.train_seq_len} "
            f"seq_len_from:{inputs.seq_len_source.replace(' ', '_')} vocab_size:{hp.vocab_size} "
            f"world_size:{dist_env().world_size} device:{device} eval_stride:{hp.eval_stride} ttt_mode:{hp.ttt_mode} "
            f"ngram_order:{hp.ngram_order}")
    if args.max_tokens and args.max_tokens + 1 < len(tokens):
        tokens = tokens[:args.max_tokens + 1]
        line += f"\nval_subset:first_{args.max_tokens}_targets (NOT the full val set)"
    tables = build_byte_tables(load_tokenizer(inputs.tokenizer), hp.vocab_size)
    return model.to(device), tokens, tables, hp, line


# ----------------------------------------------------------------------------------- the planner

class TokenFlops:
    """Forward FLOPs of one token seeing `context` keys: 2 per weight of every matrix it passes
    (embedding lookups free, the tied head counted) plus attention 4 * layers * dim * context
    (QK^T and AV)."""

    def __init__(self, cfg):
        with torch.device("meta"):
            model = GPT(cfg)
        matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        layers = cfg.num_layers + len([x for x in cfg.recur_layers.split(",") if x.strip()])
        self.base = 2.0 * (matmul + cfg.vocab_size * cfg.model_dim)
        self.per_key = 4.0 * layers * cfg.model_dim

    def window(self, length):
        """FLOPs of a forward over a window of `length` tokens (mean context (length + 1) / 2)."""
        return length * (self.base + self.per_key * (length + 1) / 2)


def window_flops(flops: TokenFlops, window: int, targets_per_window: float, n_targets: float) -> float:
    """FLOPs to score n_targets with windows of `window` tokens that score targets_per_window each."""
    return n_targets / targets_per_window * flops.window(window)


def ttt_flops(flops: TokenFlops, hp, doc_lengths: np.ndarray, scale: float) -> float:
    """Per-document TTT: each chunk a forward of its window, and 2 more forwards' worth for the
    backward where a later chunk exists; phased adds 3 forwards a token over the phase documents."""
    lengths, counts = np.unique(np.asarray(doc_lengths, dtype=np.int64), return_counts=True)
    total = 0.0
    for n, count in zip(lengths, counts):
        chunks = -(-int(n) // hp.ttt_chunk)
        w = np.minimum((np.arange(chunks) + 1) * hp.ttt_chunk, hp.train_seq_len)
        weight = np.where(np.arange(chunks) + 1 < chunks, 3.0, 1.0)
        total += count * float(np.sum(flops.window(w.astype(np.float64)) * weight))
    total *= scale
    if hp.ttt_mode == "phased":
        phase_tokens = float(np.mean(doc_lengths)) * min(hp.ttt_phase_docs, OFFICIAL_VAL_DOCS)
        total += 3.0 * phase_tokens / hp.train_seq_len * flops.window(hp.train_seq_len)
    return total


def ngram_rates(sample: np.ndarray, hp) -> dict:
    """CPU seconds of this process (single-threaded numpy: what a free core takes, whatever else
    loads the machine) for the sample: level 0 alone (every rank repeats it), all levels, the mixer."""
    t0 = time.process_time()
    online_ngram(sample, hp.vocab_size, 1, hp.ngram_discount, hp.ngram_beta)
    t1 = time.process_time()
    ng = online_ngram(sample, hp.vocab_size, hp.ngram_order, hp.ngram_discount, hp.ngram_beta)
    t2 = time.process_time()
    n = len(sample) - 1
    learned_mixture(np.full(n, -3.0), np.full(n, 3.0), ng, MixerConfig(hp.ngram_order, hp.ngram_mix_lr, hp.ngram_mix_chunk))
    return dict(level0=t1 - t0, all_levels=t2 - t1, mixer=time.process_time() - t2, tokens=n)


def run_plan(args, resolve_inputs) -> int:
    """Body of eval --plan: prints the projection; 0 done, 2 bad input."""
    try:
        cfg, hp, sample, source, bos_id = _plan_setup(args, resolve_inputs)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n, world, rate = args.val_tokens, args.world_size, args.h100_flops * args.utilisation
    print(f"eval_plan PROJECTION (not a measurement) model:{source} val_tokens:{n} world_size:{world} "
          f"seq_len:{hp.train_seq_len} h100_flops_per_s:{args.h100_flops:.3g} utilisation:{args.utilisation} "
          f"ttt_utilisation:{args.ttt_utilisation}")
    flops = TokenFlops(cfg)
    rows = [("plain", window_flops(flops, hp.train_seq_len, hp.train_seq_len, n), rate)]
    if hp.eval_stride > 0:
        rows.append(("sliding", window_flops(flops, hp.train_seq_len, hp.eval_stride, n), rate))
    if hp.ttt_mode != "off":
        lengths, scale = _plan_doc_lengths(sample, bos_id, n)
        rows.append(("ttt", ttt_flops(flops, hp, lengths, scale), args.h100_flops * args.ttt_utilisation))
    total = 0.0
    for name, flops, r in rows:
        seconds = flops / (r * world)
        total += seconds
        print(f"eval_plan phase:{name} flops:{flops:.3e} seconds:{seconds:.1f} (GPU: flops / ({r:.3g} flop/s x {world}))")
    if hp.ngram_order > 0:
        if sample is None:
            print("eval_plan phase:ngram seconds:unknown (no val tokens to measure the CPU rate on: pass --data-path)")
        else:
            m = ngram_rates(sample, hp)
            seconds = n / m["tokens"] * (m["level0"] + (m["all_levels"] - m["level0"]) / world + m["mixer"])
            total += seconds
            print(f"eval_plan phase:ngram seconds:{seconds:.1f} (CPU, measured here in CPU seconds on {m['tokens']} "
                  f"tokens: level 0 {m['level0']:.2f} s on every rank, levels 1+ {m['all_levels'] - m['level0']:.2f} s "
                  f"split over {world} ranks, mixer {m['mixer']:.2f} s on every rank; scaled linearly to {n} tokens"
                  + ("; a sample under 1M tokens stays in cache: optimistic" if m["tokens"] < 1_000_000 else "") + ")")
    print(f"eval_plan total_seconds:{total:.1f} budget_seconds:600 fits:{total <= 600} (PROJECTION)")
    return 0


def _plan_setup(args, resolve_inputs):
    """(GPTConfig, Hyperparameters, val sample or None, model description, BOS id) from an artifact or
    a preset (the BOS id from the tokenizer; 1, the challenge's, when none is given)."""
    sample, bos_id = None, 1
    if args.target:
        inputs = resolve_inputs(args.target, args.data_path, args.tokenizer, args.seq_len)
        header = inputs.header
        hp = final_hparams(inputs.config or {}, header, inputs.seq_len, args.set or [])
        source = f"{inputs.artifact.name}({header['num_params']}_params)"
        bos_id = load_tokenizer(inputs.tokenizer).bos_id()
        if inputs.data_pattern:
            sample = load_val_tokens(inputs.data_pattern, hp.vocab_size)[:args.sample_tokens].astype(np.int64)
    else:
        if args.preset not in PRESETS:
            raise FinalEvalError(f"--plan needs an artifact or --preset (one of {sorted(PRESETS)})")
        env = {"PRESET": args.preset, **dict(s.partition("=")[::2] for s in (args.set or []))}
        hp = Hyperparameters.from_env(env)
        source = f"preset_{args.preset}"
        if args.data_path:
            sample = load_val_tokens(args.data_path, hp.vocab_size)[:args.sample_tokens].astype(np.int64)
        if args.tokenizer:
            bos_id = load_tokenizer(args.tokenizer).bos_id()
    return GPTConfig.from_hparams(hp), hp, sample, source, bos_id


def _plan_doc_lengths(sample, bos_id: int, n: int):
    """Target counts of the documents (from the sample's BOS positions, scaled to n tokens), else
    50,000 documents of the official mean length; and the scale factor."""
    if sample is not None:
        spans = document_spans(sample, bos_id)
        lengths = spans[:, 1] - spans[:, 0]
        return lengths, n / max(1, lengths.sum())
    return np.full(OFFICIAL_VAL_DOCS, n // OFFICIAL_VAL_DOCS), 1.0
