"""Validity audit for any scorer: conditions C1-C4 of an honest score, checked by running it.

    python -m lila_golf audit --scorer ngram ../shared/data/fineweb10B_sp1024_mini/fineweb_val_000000.bin
    python -m lila_golf audit --scorer mypkg.mymod:make_scorer --max-tokens 20000 --seed 7 SHARD
    python -m lila_golf audit --static records/.../train_gpt.py          # source patterns (audit_static.py)

A scorer follows the streaming protocol of lila_golf/core/scoring.py (begin, score_chunk, vocab_size);
`module:factory` names a zero-argument callable returning a fresh scorer. The scorer is told which
positions are probed, so the audit never relies on it not knowing: the same stream is scored by
fresh instances in several passes, in random order, one of them with no probe at all (exactly an
eval pass), the others with different probe sets, and every log-prob must agree between them.

- Probes: per probed pass, every position of `n_chunks` whole chunks chosen at random plus `n_probe`
  scattered positions; the two probed passes use different sets. Wherever a distribution is
  returned it must be non-negative, sum to 1 within 1e-6 and give the reported log-prob of x_t.
- C1 causality / C3 score before update: at `n_check` random positions t a fresh instance scores a
  copy of the stream up to the end of t's chunk in which x_t is replaced by another real token y and
  the tokens after t by real tokens from elsewhere in the stream (chunks keep their length, so the
  rerun looks like a pass). The distribution at t and every score before t must not change, and
  the reported log p(y) must equal the first pass's distribution at y. A failure is attributed by
  two more reruns at that t: future replaced only (C1), x_t replaced only (C3).
- C2 normalisation: the probe checks above, and every log-prob of every pass finite and <= 0.
- C4 one pass: chunks are handed over once, in order (the protocol); every log-prob is the same in
  every pass whatever was probed and however many instances came before.

What it proves: a scorer that misbehaves at a fraction f of positions, chosen without knowing the
audit's seed, is caught with probability 1 - (1 - f)^N at the N probed positions (misreported log p,
unnormalised or probe-dependent scores) and 1 - (1 - f)^n_check where x_t or later tokens change
the distribution (README "What the audit proves"). The seed is random unless --seed is given, and
printed. Scorers by name come from SCORER_BUILDERS; other modules add theirs with register_scorer
(e.g. `model`, `model+ngram` given --artifact).
"""
from __future__ import annotations

import argparse
import importlib
import secrets
import sys
from dataclasses import dataclass, field

import numpy as np

from ..core.data import data_source_label, read_shard
from ..core.scoring import NgramScorer


@dataclass
class AuditResult:
    condition: str   # "C1" .. "C4"
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"audit {self.condition} {self.name}: {'PASS' if self.passed else 'FAIL'} ({self.detail})"


class AuditResults(list):
    """The four AuditResults, plus the seed and what was looked at (for the coverage line)."""
    seed: int = 0
    probed: int = 0      # distinct positions whose full distribution was checked
    checked: int = 0     # positions rerun with x_t and the tokens after t replaced
    targets: int = 0
    eval_logp: np.ndarray | None = None  # the pass without probes: exactly what an eval computes

    def coverage_line(self) -> str:
        def p(f, n):
            return f"{100 * (1 - (1 - f) ** n):.1f}%"
        fs = (0.001, 0.01, 0.05)
        return (f"audit_coverage seed:{self.seed} targets:{self.targets} probed:{self.probed} reruns:{self.checked} "
                f"detect(f=0.1%,1%,5%) probed 1-(1-f)^{self.probed}: {', '.join(p(f, self.probed) for f in fs)}; "
                f"reruns 1-(1-f)^{self.checked}: {', '.join(p(f, self.checked) for f in fs)}")


@dataclass
class AuditPlan:
    """What one audit looks at: probe sets of the passes (in run order) and the rerun positions."""
    probe_sets: list   # sorted global target positions per pass; one of them is empty
    checks: np.ndarray  # rerun positions t (each inside the first probed pass's probe set)
    chunk_size: int


@dataclass
class _Normalisation:
    """Running C2 figures over every distribution returned and every score reported."""
    rows: int = 0
    worst_sum: float = 0.0
    worst_agree: float = 0.0
    negative: int = 0
    bad_scores: int = 0   # log-probs that are NaN, +inf or > 0 (p > 1)
    positions: set = field(default_factory=set)

    def add(self, dists: np.ndarray, logp: np.ndarray, targets: np.ndarray, where: np.ndarray) -> None:
        if not len(dists):
            return
        finite = np.isfinite(dists).all(axis=1)
        sums = np.where(finite, np.abs(dists.sum(axis=1) - 1.0), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.log(dists[np.arange(len(dists)), targets])
        self.rows += len(dists)
        self.worst_sum = max(self.worst_sum, float(sums.max()))
        self.worst_agree = max(self.worst_agree, _audit_max_diff(own, logp))
        self.negative += int(np.sum(dists < 0))
        self.positions.update(where.tolist())

    def add_scores(self, logp: np.ndarray, tol: float) -> None:
        self.bad_scores += int(np.sum(~(logp <= tol)))  # NaN and +inf fail too

    def result(self, n_scores: int, tol: float) -> AuditResult:
        ok = self.worst_sum <= 1e-6 and self.worst_agree <= tol and self.negative == 0 and self.bad_scores == 0
        detail = (f"{self.rows} distributions at {len(self.positions)} positions: max |sum-1| = {self.worst_sum:.3g}, "
                  f"max |log q(x_t) - reported| = {self.worst_agree:.3g}, negative entries = {self.negative}; "
                  f"{self.bad_scores} of {n_scores} reported log-probs not finite or > 0")
        return AuditResult("C2", "normalisation", ok, detail)


def _audit_max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    same = a == b  # equal infinities count as equal; NaN never does
    return float(np.max(np.where(same, 0.0, np.nan_to_num(np.abs(a - b), nan=np.inf))))


def _chunk_bounds(n_tokens: int, chunk_size: int) -> list[tuple[int, int]]:
    """[a, b) target ranges of the chunks: targets 1 .. n-1, as run_scorer cuts them."""
    return [(a, min(a + chunk_size, n_tokens)) for a in range(1, n_tokens, chunk_size)]


def _probe_set(rng, bounds, chunks: np.ndarray, n_probe: int, n_tokens: int) -> np.ndarray:
    whole = [np.arange(*bounds[c]) for c in chunks]
    scattered = 1 + rng.choice(n_tokens - 1, size=min(n_probe, n_tokens - 1), replace=False)
    return np.unique(np.concatenate(whole + [scattered]).astype(np.int64))


def _rerun_positions(rng, n_tokens: int, chunk_size: int, count: int) -> np.ndarray:
    """`count` distinct targets, uniform over those with a later target in their chunk (else any)."""
    t = 1 + rng.permutation(n_tokens - 1) if n_tokens <= 1 << 20 else None
    if t is None:  # a long stream: draw a few more than needed and drop the excluded ones
        t = 1 + rng.choice(n_tokens - 1, size=min(n_tokens - 1, 2 * count + 64), replace=False)
    ends = np.minimum(1 + ((t - 1) // chunk_size + 1) * chunk_size, n_tokens)
    keep = t[t < ends - 1]
    return np.sort((keep if keep.size else t)[:count]).astype(np.int64)


def plan_audit(rng, n_tokens: int, chunk_size: int, n_chunks: int, n_probe: int, n_check: int) -> AuditPlan:
    """Two probe sets on different whole chunks (+ scattered positions), one empty set, in random
    order; rerun positions uniform over targets that have a later target in their chunk."""
    bounds = _chunk_bounds(n_tokens, chunk_size)
    order = rng.permutation(len(bounds))
    k = min(n_chunks, len(bounds) // 2)
    sets = [_probe_set(rng, bounds, order[:k], n_probe, n_tokens),
            _probe_set(rng, bounds, order[k:2 * k], n_probe, n_tokens)]
    checks = _rerun_positions(rng, n_tokens, chunk_size, n_check)
    sets[0] = np.union1d(sets[0], checks)
    passes = [sets[0], sets[1], np.empty(0, dtype=np.int64)]
    return AuditPlan([passes[i] for i in rng.permutation(3)], checks, chunk_size)


def audit_pass(scorer, tokens: np.ndarray, chunk_size: int, probe: np.ndarray, keep, c2: _Normalisation,
               tol: float):
    """One pass, driven as run_scorer drives an eval (same arguments, same types), checking every
    returned distribution on the fly. Returns (logp (n-1,), {t: distribution} for t in keep)."""
    n, V = len(tokens), int(scorer.vocab_size)
    if int(tokens.min()) < 0 or int(tokens.max()) >= V:
        raise ValueError(f"token ids outside the scorer's vocabulary [0, {V})")
    logp, kept = np.empty(n - 1), {}
    scorer.begin(int(tokens[0]))
    for a, b in _chunk_bounds(n, chunk_size):
        sel = probe[(probe >= a) & (probe < b)]
        lp, d = scorer.score_chunk(tokens[a:b].copy(), sel - a)
        lp, d = np.asarray(lp, dtype=np.float64), np.asarray(d, dtype=np.float64)
        if lp.shape != (b - a,) or d.shape != (len(sel), V):
            raise ValueError(f"{type(scorer).__name__}.score_chunk returned shapes {lp.shape}, {d.shape}; "
                             f"expected ({b - a},), ({len(sel)}, {V})")
        c2.add(d, lp[sel - a], tokens[sel], sel)
        kept.update({int(t): d[i] for i, t in enumerate(sel) if int(t) in keep})
        logp[a - 1:b - 1] = lp
    c2.add_scores(logp, tol)
    return logp, kept


def _other_token(rng, tokens: np.ndarray, t: int, vocab_size: int) -> int:
    """A real token of the stream (so the rerun reads like text) that differs from x_t."""
    for _ in range(16):
        y = int(tokens[rng.integers(0, len(tokens))])
        if y != tokens[t]:
            return y
    return (int(tokens[t]) + 1) % vocab_size


def _rerun_stream(rng, tokens: np.ndarray, t: int, end: int, y: int | None, new_future: bool) -> np.ndarray:
    """tokens[:end] with x_t := y (unless None) and, if new_future, tokens t+1 .. end-1 replaced by a
    stretch of real tokens from a random place in the stream."""
    stream = tokens[:end].copy()
    if y is not None:
        stream[t] = y
    span = end - t - 1
    if new_future and span > 0:
        start = int(rng.integers(0, len(tokens) - span + 1))
        stream[t + 1:end] = tokens[start:start + span]
    return stream


@dataclass
class _RerunFigures:
    dist: float         # max |change| of the distribution at t
    in_chunk: float     # max |change| of the scores of t's chunk before t (vs the pass without probes)
    earlier: float      # max |change| of the scores of earlier chunks
    logp_y: float       # |reported log p(y) - log q_t(y)| (0 when x_t was kept)
    prefix: np.ndarray  # the scores of t's chunk before t


def _rerun(factory, stream, t: int, y, ref_logp, ref_dist, chunk_size, c2, tol) -> _RerunFigures:
    logp, kept = audit_pass(factory(), stream, chunk_size, np.array([t], dtype=np.int64), {t}, c2, tol)
    a = 1 + (t - 1) // chunk_size * chunk_size  # first target of t's chunk
    with np.errstate(divide="ignore"):
        logp_y = 0.0 if y is None else _audit_max_diff(logp[t - 1:t], np.log(ref_dist[y:y + 1]))
    return _RerunFigures(_audit_max_diff(kept[t], ref_dist), _audit_max_diff(logp[a - 1:t - 1], ref_logp[a - 1:t - 1]),
                         _audit_max_diff(logp[:a - 1], ref_logp[:a - 1]), logp_y, logp[a - 1:t - 1])


def _check_position(factory, rng, tokens, t, ref_logp, ref_dist, chunk_size, c2, tol) -> tuple[float, float, float]:
    """(C1, C3, C4) figures at one rerun position: one rerun with x_t and the future replaced; when
    anything moved, one rerun per cause names the condition (scores before t that move alike in
    both are probe-dependent, C4, not causal)."""
    end = min(1 + ((t - 1) // chunk_size + 1) * chunk_size, len(tokens))
    y = _other_token(rng, tokens, t, len(ref_dist))
    both = _rerun(factory, _rerun_stream(rng, tokens, t, end, y, True), t, y, ref_logp, ref_dist, chunk_size, c2, tol)
    if max(both.dist, both.in_chunk) <= tol:
        return 0.0, both.logp_y, both.earlier
    fut = _rerun(factory, _rerun_stream(rng, tokens, t, end, None, True), t, None, ref_logp, ref_dist, chunk_size, c2, tol)
    own = _rerun(factory, _rerun_stream(rng, tokens, t, end, y, False), t, y, ref_logp, ref_dist, chunk_size, c2, tol)
    c1 = max(fut.dist, _audit_max_diff(fut.prefix, own.prefix))
    c3 = max(own.dist, own.logp_y, both.logp_y)
    c4 = max(both.earlier, fut.earlier, own.earlier)
    if max(c1, c3) <= tol:  # nothing causal: the scores moved with the probes, or only both changes move it
        c4 = max(c4, both.in_chunk)
        c1 = c3 = both.dist
    return c1, c3, c4


def run_audit(factory, tokens, *, n_probe: int = 512, n_chunks: int = 1, n_check: int = 32,
              chunk_size: int = 1024, seed: int | None = None, tol: float = 1e-6) -> AuditResults:
    """Check C1-C4 for scorers made by `factory()` on `tokens` (1-D ids); one AuditResult per
    condition, in a list that also carries the seed (random unless given) and the coverage."""
    tokens = np.asarray(tokens).astype(np.int64)
    n = len(tokens)
    if n < 8 or chunk_size < 1 or min(n_probe, n_chunks, n_check) < 0:
        raise ValueError(f"audit needs >= 8 tokens, chunk_size >= 1 and counts >= 0 (got {n}, {chunk_size})")
    seed = secrets.randbelow(2 ** 31) if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    plan = plan_audit(rng, n, chunk_size, n_chunks, n_probe, n_check)
    c2, keep = _Normalisation(), set(plan.checks.tolist())
    passes = [audit_pass(factory(), tokens, chunk_size, probe, keep, c2, tol) for probe in plan.probe_sets]
    # reference scores: the pass without probes, i.e. what an eval computes; reruns probe only t,
    # so their earlier scores are unprobed too and any change there is causal, not probe-driven
    ref_logp, ref_dists = next(logp for (logp, _), p in zip(passes, plan.probe_sets) if not len(p)), {}
    c4 = max(_audit_max_diff(logp, ref_logp) for logp, _ in passes)
    for _, kept in passes:  # a position probed in two passes must get the same distribution twice
        for t, d in kept.items():
            c4 = max(c4, _audit_max_diff(d, ref_dists.setdefault(t, d)))
    c1 = c3 = 0.0
    for t in plan.checks.tolist():
        f1, f3, f4 = _check_position(factory, rng, tokens, t, ref_logp, ref_dists[t], chunk_size, c2, tol)
        c1, c3, c4 = max(c1, f1), max(c3, f3), max(c4, f4)
    out = AuditResults(_audit_results(plan, c2, c1, c3, c4, n, tol))
    out.seed, out.probed, out.checked, out.targets = seed, len(c2.positions), len(plan.checks), n - 1
    out.eval_logp = ref_logp
    return out


def _audit_results(plan: AuditPlan, c2: _Normalisation, c1, c3, c4, n: int, tol: float) -> list[AuditResult]:
    m = len(plan.checks)
    sizes = "/".join(str(len(p)) for p in plan.probe_sets)
    return [
        AuditResult("C1", "causality", c1 <= tol,
                    f"{m} reruns, tokens after t replaced by other real tokens: max |change| of the "
                    f"distribution at t and of the scores before t in its chunk = {c1:.3g}"),
        c2.result(n - 1, tol),
        AuditResult("C3", "score-before-update", c3 <= tol,
                    f"{m} reruns, x_t replaced by another real token y: max |change| of the distribution at t, "
                    f"and |reported log p(y) - log q_t(y)| = {c3:.3g}"),
        AuditResult("C4", "one-pass", c4 <= tol,
                    f"3 passes by fresh instances in random order probing {sizes} positions (one pass none) "
                    f"+ {m} reruns: max |change| of any of the {n - 1} scores = {c4:.3g}"),
    ]


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


def _audit_check_sidecar(tokenizer_path, shard) -> None:
    from ..core.data import build_byte_tables, load_tokenizer, load_val_bytes
    if build_byte_tables(load_tokenizer(tokenizer_path)).sidecar_required:
        load_val_bytes(shard, 1)


def _audit_bpb_line(logp, tokens, tokenizer_path, shard) -> str:
    """bpb of the audited pass; a CaseOps tokenizer counts bytes from the shard's byte sidecar only."""
    from ..core.data import bits_per_byte, build_byte_tables, load_tokenizer, val_target_bytes
    tables = build_byte_tables(load_tokenizer(tokenizer_path))
    n_bytes = int(val_target_bytes(tokens, tables, shard).sum())
    return f"val_bpb:{bits_per_byte(-logp.sum(), n_bytes):.6f} bytes:{n_bytes}"


def run_audit_command(args) -> int:
    """CLI body: the static scan of --static FILE, or the dynamic audit of a scorer on a shard (one
    line per condition); exit 1 on any failure or finding, 2 on bad input."""
    if args.static:
        from .audit_static import run_static_audit
        return run_static_audit(args.static)
    seed = secrets.randbelow(2 ** 31) if args.seed is None else args.seed
    try:
        if not args.shard:
            raise ValueError("give a token shard to audit a scorer on (or --static FILE)")
        if args.tokenizer:  # a CaseOps tokenizer without its byte sidecar is refused before any work
            _audit_check_sidecar(args.tokenizer, args.shard)
        tokens = read_shard(args.shard, vocab_size=args.vocab_size)
        tokens = (tokens[:args.max_tokens] if args.max_tokens else tokens).astype(np.int64)
        factory = resolve_scorer(args.scorer, args)
        print(f"audit_seed:{seed} (reproduce with --seed {seed})", flush=True)
        results = run_audit(factory, tokens, n_probe=args.n_probe, n_chunks=args.n_chunks, n_check=args.n_check,
                            chunk_size=args.chunk_size, seed=seed, tol=args.tol)
    except ValueError as err:
        print(f"audit error: {err}", file=sys.stderr)
        return 2
    for r in results:
        print(r.line(), flush=True)
    print(results.coverage_line())
    logp = results.eval_logp
    extra = _audit_bpb_line(logp, tokens, args.tokenizer, args.shard) if args.tokenizer else ""
    print(f"audit_score scorer:{args.scorer} tokens:{len(tokens) - 1} val_loss:{-logp.mean():.6f} {extra}".rstrip()
          + f" data:{data_source_label(tokens)}")
    return 0 if all(r.passed for r in results) else 1


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """Register `audit` on the package CLI."""
    p = subparsers.add_parser("audit", help="check a scorer for validity conditions C1-C4 on a token shard, "
                                            "or scan a train_gpt.py (--static)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("shard", nargs="?", help="token shard (official .bin format)")
    p.add_argument("--static", metavar="FILE", default=None,
                   help="scan a submitted train_gpt.py (plain or packed) for ruled-out patterns instead")
    p.add_argument("--scorer", default="ngram", help=f"registered name ({', '.join(sorted(SCORER_BUILDERS))}) or module:factory")
    p.add_argument("--artifact", default=None, help="model artifact, for model-based scorers")
    p.add_argument("--tokenizer", default=None, help="SentencePiece model: adds val_bpb with exact bytes")
    p.add_argument("--seq-len", type=int, default=None,
                   help="model scorers: window length, when neither the artifact header nor a run config has it")
    p.add_argument("--max-tokens", type=int, default=65536, help="audit the first N tokens of the shard (0 = all)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--ngram-order", type=int, default=10, help="max n-gram order for the ngram scorers")
    p.add_argument("--chunk-size", type=int, default=8192,
                   help="tokens per score_chunk call: the one your eval uses (eval's default is 8192)")
    p.add_argument("--n-probe", type=int, default=512, help="scattered positions probed per probed pass (C2)")
    p.add_argument("--n-chunks", type=int, default=1, help="whole chunks probed per probed pass (C2)")
    p.add_argument("--n-check", type=int, default=32, help="positions rerun with x_t and later tokens replaced (C1, C3)")
    p.add_argument("--seed", type=int, default=None, help="reproduce an audit (default: random, printed)")
    p.add_argument("--tol", type=float, default=1e-6,
                   help="largest score change read as float noise (C1, C3, C4); float32 TTT moves ~1e-6, use 1e-5")
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
