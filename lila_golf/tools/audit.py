"""Validity audit for any scorer: conditions C1-C4 of an honest score, checked by running it.

    python -m lila_golf audit --scorer ngram ../shared/data/fineweb10B_sp1024_mini/fineweb_val_000000.bin
    python -m lila_golf audit --scorer mypkg.mymod:make_scorer --max-tokens 20000 SHARD

A scorer follows the streaming protocol of lila_golf/core/scoring.py (begin, score_chunk, vocab_size);
`module:factory` names a zero-argument callable returning a fresh scorer. The checks:

- C1 causality: for sampled positions t, the tokens after t (inside t's chunk) are replaced; every
  score at or before t and the distribution at t must stay the same.
- C2 normalisation: the distributions the scorer used at sampled positions are non-negative, sum to 1
  within 1e-6, and agree with the log-probabilities it reported for the realised tokens.
- C3 score before update: x_t alone is substituted; the distribution at t must stay the same (a
  scorer whose state absorbs x_t before scoring it fails).
- C4 one pass: the protocol hands each chunk over once, in order, so there is nothing to rescore; a
  fresh instance must also reproduce the same scores (no hidden state carried between runs).

Prints one line per condition and exits 1 on any failure. Scorers by name come from SCORER_BUILDERS;
other modules add theirs with register_scorer (e.g. `model`, `model+ngram` given --artifact).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

import numpy as np

from ..core.data import read_shard
from ..core.scoring import NgramScorer, run_scorer


@dataclass
class AuditResult:
    condition: str   # "C1" .. "C4"
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"audit {self.condition} {self.name}: {'PASS' if self.passed else 'FAIL'} ({self.detail})"


def _audit_positions(rng, n_tokens: int, chunk_size: int, count: int, tail_only: bool) -> np.ndarray:
    """Distinct target positions in [1, n); tail_only keeps the second half (state is warm there)
    and avoids the last position of a chunk, so that later tokens of the same chunk exist."""
    lo = n_tokens // 2 if tail_only else 1
    cand = np.arange(max(lo, 1), n_tokens - 1)
    if tail_only:
        cand = cand[(cand - 1) % chunk_size != chunk_size - 1]
    if cand.size == 0:
        cand = np.arange(1, n_tokens)
    return np.sort(rng.choice(cand, size=min(count, cand.size), replace=False))


def _audit_chunk_end(t: int, n_tokens: int, chunk_size: int) -> int:
    return min(n_tokens, 1 + ((t - 1) // chunk_size + 1) * chunk_size)


def _audit_changed(tokens: np.ndarray, rng, vocab_size: int) -> np.ndarray:
    """Every token replaced by a different one."""
    return (tokens + rng.integers(1, vocab_size, size=tokens.shape)) % vocab_size


def _audit_max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    same = (a == b)  # equal infinities count as equal
    return float(np.max(np.where(same, 0.0, np.abs(a - b))))


def check_normalisation(tokens, logp, dists, probe, tol: float) -> AuditResult:
    """C2 from a reference run's probe distributions."""
    realised = dists[np.arange(len(probe)), tokens[probe]]
    with np.errstate(divide="ignore"):
        agree = _audit_max_diff(np.log(realised), logp[probe - 1])
    sums = np.abs(dists.sum(axis=1) - 1.0)
    worst_sum = float(sums.max()) if sums.size else 0.0
    negative = int(np.sum(dists < 0))
    finite = bool(np.all(np.isfinite(logp)))
    ok = worst_sum <= 1e-6 and negative == 0 and agree <= tol and finite and not np.any(np.isnan(dists))
    detail = (f"{len(probe)} positions, max |sum-1| = {worst_sum:.3g}, max |log p(x_t) - reported| = {agree:.3g}, "
              f"negative entries = {negative}, all scores finite = {finite}")
    return AuditResult("C2", "normalisation", ok, detail)


def run_audit(factory, tokens, *, n_probe: int = 16, n_check: int = 3, chunk_size: int = 1024,
              seed: int = 0, tol: float = 1e-6) -> list[AuditResult]:
    """Check C1-C4 for scorers made by `factory()` on `tokens` (1-D ids); one AuditResult per condition."""
    scorer = factory()
    vocab_size = int(scorer.vocab_size)
    tokens = np.asarray(tokens).astype(np.int64)
    n = len(tokens)
    if n < 8:
        raise ValueError(f"audit needs at least 8 tokens, got {n}")
    rng = np.random.default_rng(seed)
    probe = _audit_positions(rng, n, chunk_size, n_probe, tail_only=False)
    checks = _audit_positions(rng, n, chunk_size, n_check, tail_only=True)
    all_probe = np.unique(np.concatenate([probe, checks]))
    logp, dists = run_scorer(scorer, tokens, chunk_size, all_probe)
    dist_at = {int(t): dists[k] for k, t in enumerate(all_probe)}
    results = [None, check_normalisation(tokens, logp, dists, all_probe, tol)]

    c1_worst, c3_worst = 0.0, 0.0
    for t in checks:
        end = _audit_chunk_end(int(t), n, chunk_size)
        future = tokens[:end].copy()
        future[t + 1:] = _audit_changed(future[t + 1:], rng, vocab_size)
        lp1, d1 = run_scorer(factory(), future, chunk_size, [t])
        c1_worst = max(c1_worst, _audit_max_diff(lp1[:t], logp[:t]), _audit_max_diff(d1[0], dist_at[int(t)]))
        swapped = tokens[:end].copy()
        swapped[t] = _audit_changed(swapped[t:t + 1], rng, vocab_size)[0]
        lp3, d3 = run_scorer(factory(), swapped, chunk_size, [t])
        c3_worst = max(c3_worst, _audit_max_diff(lp3[:t - 1], logp[:t - 1]), _audit_max_diff(d3[0], dist_at[int(t)]))
    results[0] = AuditResult("C1", "causality", c1_worst <= tol,
                             f"{len(checks)} positions, tokens after t changed: max |change| of scores <= t "
                             f"and of the distribution at t = {c1_worst:.3g}")
    results.append(AuditResult("C3", "score-before-update", c3_worst <= tol,
                               f"{len(checks)} positions, x_t substituted: max |change| of the distribution "
                               f"at t and earlier scores = {c3_worst:.3g}"))
    logp_again, _ = run_scorer(factory(), tokens, chunk_size)
    again = _audit_max_diff(logp_again, logp)
    results.append(AuditResult("C4", "one-pass", again <= tol,
                               f"streaming protocol, each chunk seen once in order; fresh instance "
                               f"max |change| of {n - 1} scores = {again:.3g}"))
    return results


# ---------------------------------------------------------------------------- scorer registry

SCORER_BUILDERS: dict = {}


def register_scorer(name: str, builder) -> None:
    """builder(args) -> factory, a zero-argument callable making a fresh scorer (args: the CLI namespace)."""
    SCORER_BUILDERS[name] = builder


def _build_ngram(args):
    vocab_size, order = args.vocab_size, args.ngram_order
    return lambda: NgramScorer(vocab_size, max_order=order)


register_scorer("ngram", _build_ngram)


def resolve_scorer(spec: str, args):
    """A registered name, or module:attr naming a zero-argument factory."""
    if spec in SCORER_BUILDERS:
        return SCORER_BUILDERS[spec](args)
    if ":" not in spec:
        raise ValueError(f"unknown scorer {spec!r}: use one of {sorted(SCORER_BUILDERS)} or module:factory")
    module_name, attr = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load scorer factory {spec!r}: {err}") from err
    if not callable(factory):
        raise ValueError(f"scorer factory {spec!r} is not callable")
    return factory


def _audit_bpb_line(logp, tokens, tokenizer_path) -> str:
    from ..core.data import bits_per_byte, build_byte_tables, load_tokenizer, target_bytes
    tables = build_byte_tables(load_tokenizer(tokenizer_path))
    n_bytes = int(target_bytes(tokens[:-1], tokens[1:], tables).sum())
    return f"val_bpb:{bits_per_byte(-logp.sum(), n_bytes):.6f} bytes:{n_bytes}"


def run_audit_command(args) -> int:
    """CLI body: load the shard, audit the scorer, print one line per condition; 1 on any failure."""
    try:
        tokens = read_shard(args.shard, vocab_size=args.vocab_size)[:args.max_tokens].astype(np.int64)
        factory = resolve_scorer(args.scorer, args)
        results = run_audit(factory, tokens, n_probe=args.n_probe, n_check=args.n_check,
                            chunk_size=args.chunk_size, seed=args.seed)
    except ValueError as err:
        print(f"audit error: {err}", file=sys.stderr)
        return 2
    for r in results:
        print(r.line(), flush=True)
    logp, _ = run_scorer(factory(), tokens, args.chunk_size)
    extra = _audit_bpb_line(logp, tokens, args.tokenizer) if args.tokenizer else ""
    print(f"audit_score scorer:{args.scorer} tokens:{len(tokens) - 1} val_loss:{-logp.mean():.6f} {extra}".rstrip())
    return 0 if all(r.passed for r in results) else 1


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """Register `audit` on the package CLI."""
    p = subparsers.add_parser("audit", help="check a scorer for validity conditions C1-C4 on a token shard",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("shard", help="token shard (official .bin format)")
    p.add_argument("--scorer", default="ngram", help=f"registered name ({', '.join(sorted(SCORER_BUILDERS))}) or module:factory")
    p.add_argument("--artifact", default=None, help="model artifact, for model-based scorers")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model: adds val_bpb with exact bytes")
    p.add_argument("--seq-len", type=int, default=None,
                   help="model scorers: window length, when neither the artifact header nor a run config has it")
    p.add_argument("--max-tokens", type=int, default=65536, help="audit the first N tokens of the shard")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--ngram-order", type=int, default=10, help="max n-gram order for the ngram scorers")
    p.add_argument("--chunk-size", type=int, default=1024, help="tokens per score_chunk call")
    p.add_argument("--n-probe", type=int, default=16, help="positions whose full distributions are checked (C2)")
    p.add_argument("--n-check", type=int, default=3, help="positions perturbed for C1 and C3 (2 reruns each)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_audit_command)
    return p


def main(argv=None) -> int:
    """Standalone entry: python -m lila_golf.tools.audit [args]."""
    parser = argparse.ArgumentParser(prog="lila_golf.tools.audit")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
