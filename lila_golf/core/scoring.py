"""Scorers: one left-to-right pass that gives log p(x_t | x_<t) for every target (public API).

A scorer sees the token stream once, in chunks, left to right, and nothing else:

    scorer.begin(first_token)                       # x_0: context only, never scored
    logp, dists = scorer.score_chunk(chunk, probe)  # for each later chunk, in order

- `chunk`: 1-D int array, the next tokens x_a .. x_{b-1} of the stream.
- `logp`: float64 (len(chunk),), natural log p(x_t | x_0 .. x_{t-1}) for every token of the chunk.
- `probe`: chunk-relative positions; `dists` is float64 (len(probe), vocab_size), the full
  distribution over the vocabulary that scored each of those positions, produced in the same call
  (so the audit sees exactly what was scored, not a recomputation).
- State (n-gram counts, adapted weights) may absorb a chunk only after all of that chunk's
  scores are fixed: every scorer here updates at the end of `score_chunk`, after computing `logp`.
  So a chunk's tokens never influence their own scores, only later chunks'.
- `vocab_size`: the size of the distribution.

Because the stream arrives once, in order, rescoring (condition C4) is impossible by construction;
`python -m lila_golf audit` checks C1-C4 for any object with this interface
(see lila_golf/tools/audit.py). `run_scorer(scorer, tokens, chunk_size, probe)` drives one pass.

Scorers provided:
- `NgramScorer`: the backoff n-gram of lila_golf/core/ngram.py alone, counts start empty.
- `ModelScorer(logits_fn, seq_len, stride, vocab_size, device)`: a causal LM scoring every target in
  the sliding window that gives it the most context (see `sliding_plan`).
- `MixtureScorer(model, ngram, weight_fn)`: p = (1 - a) p_model + a p_ngram with a = weight_fn(H),
  H the model's entropy (nats) at that position: prefix-only, so p is a true distribution.
  Default `entropy_mixing_weight`: a = 0.20 + 0.55 * sigmoid(2 (H - 3)), the constants of the
  PR #803 / #1033 mixer family; their code (BackoffNgramMixer, PR #779) computes H in nats,
  -(softmax * log_softmax).sum(-1), and so does this one.

`eval_sliding(...)` is the batched, multi-rank sliding-window evaluation of a plain model.
"""

import numpy as np
import torch

from .collectives import all_reduce_
from .ngram import BackoffNgram
from .data import target_bytes, bits_per_byte


def _scoring_tokens(tokens, vocab_size: int, what: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected a 1-D integer token array, got {arr.dtype} shape {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab_size):
        raise ValueError(f"{what}: token id outside the vocabulary [0, {vocab_size})")
    return arr


def run_scorer(scorer, tokens, chunk_size: int, probe=()) -> tuple[np.ndarray, np.ndarray]:
    """One pass of `scorer` over `tokens` in chunks of `chunk_size`.

    probe: global target positions t (1 <= t < len(tokens)) whose full distributions to capture.
    Returns (logp of tokens[1:] (float64, len-1), dists (len(probe), V) in probe order).
    """
    tokens = _scoring_tokens(tokens, scorer.vocab_size, "run_scorer")
    probe = np.asarray(probe, dtype=np.int64).reshape(-1)
    if len(tokens) < 2 or chunk_size < 1:
        raise ValueError(f"run_scorer needs >= 2 tokens and chunk_size >= 1 (got {len(tokens)}, {chunk_size})")
    if probe.size and (probe.min() < 1 or probe.max() >= len(tokens)):
        raise ValueError(f"probe positions must lie in [1, {len(tokens)})")
    logp = np.empty(len(tokens) - 1)
    dists = np.empty((len(probe), scorer.vocab_size))
    scorer.begin(int(tokens[0]))
    for a in range(1, len(tokens), chunk_size):
        b = min(a + chunk_size, len(tokens))
        sel = np.nonzero((probe >= a) & (probe < b))[0]
        lp, d = scorer.score_chunk(tokens[a:b], probe[sel] - a)
        lp, d = np.asarray(lp, dtype=np.float64), np.asarray(d, dtype=np.float64)
        if lp.shape != (b - a,) or d.shape != (len(sel), scorer.vocab_size):
            raise ValueError(f"{type(scorer).__name__}.score_chunk returned shapes {lp.shape}, {d.shape}; "
                             f"expected ({b - a},), ({len(sel)}, {scorer.vocab_size})")
        logp[a - 1:b - 1] = lp
        dists[sel] = d
    return logp, dists


class NgramScorer:
    """Pure backoff n-gram scorer (no model); counts start empty and absorb each chunk after scoring it."""

    def __init__(self, vocab_size: int, max_order: int = 10, discount: float = 0.5, beta: float = 3.0,
                 max_entries: int | None = None):
        self.vocab_size, self.max_order = vocab_size, max_order
        self.discount, self.beta, self.max_entries = discount, beta, max_entries
        self.lm, self.history = None, None

    def begin(self, first_token: int) -> None:
        self.lm = BackoffNgram(self.vocab_size, self.max_order, self.discount, self.beta, self.max_entries)
        self.history = _scoring_tokens([first_token], self.vocab_size, "NgramScorer.begin")

    def score_chunk(self, chunk, probe=()):
        """(logp (len(chunk),), dists (len(probe), V)); counts updated only after both are computed."""
        if self.lm is None:
            raise RuntimeError("NgramScorer.score_chunk called before begin(first_token)")
        chunk = _scoring_tokens(chunk, self.vocab_size, "NgramScorer.score_chunk")
        window = np.concatenate([self.history, chunk])  # history = the last max_order-1 tokens
        start = len(self.history)
        logp = self.lm.logprob(window, start)
        dists = self.lm.distributions(window, start + np.asarray(probe, dtype=np.int64))
        self.lm.update(window, start)  # score first, then count
        self.history = window[-max(self.max_order - 1, 1):]
        return logp, dists


def sliding_plan(first_target: int, end_target: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows scoring targets [first_target, end_target): a list of (start, j0, j1).

    Windows start on the grid 0, stride, 2*stride, ... and hold at most seq_len input tokens. Target i
    is scored by the window that gives it the most context: start 0 if i <= seq_len (all of its
    prefix), else the smallest grid start s >= i - seq_len (context i - s in (seq_len - stride,
    seq_len]). Window s scores targets [j0, j1) from inputs tokens[s : j1 - 1]. stride == seq_len is
    the plain non-overlapping evaluation.
    """
    if not (1 <= stride <= seq_len):
        raise ValueError(f"sliding window needs 1 <= stride <= seq_len, got stride={stride}, seq_len={seq_len}")
    plan, i = [], max(first_target, 1)
    while i < end_target:
        s = 0 if i <= seq_len else -(-(i - seq_len) // stride) * stride
        j1 = min(s + seq_len + 1, end_target)
        plan.append((s, i, j1))
        i = j1
    return plan


@torch.no_grad()
def _scoring_run_plan(logits_fn, tokens: torch.Tensor, offset: int, plan, batch_size: int,
                      vocab_size, probe=(), want_entropy: bool = False):
    """Run the plan's windows in batches of equal length. tokens[k] is global position offset + k.

    Returns logp (float64, targets of the plan in order), entropy (or None), dists (len(probe), V);
    probe holds global target positions.
    """
    i0 = plan[0][1] if plan else 0
    n = (plan[-1][2] - i0) if plan else 0
    device = tokens.device
    logp = torch.empty(n, dtype=torch.float64, device=device)
    entropy = torch.empty(n, dtype=torch.float64, device=device) if want_entropy else None
    probe = np.asarray(probe, dtype=np.int64).reshape(-1)
    dists = torch.empty((len(probe), vocab_size or 0), dtype=torch.float64, device=device)
    by_len = {}
    for s, j0, j1 in plan:
        by_len.setdefault(j1 - 1 - s, []).append((s, j0, j1))
    for length, group in by_len.items():
        for b in range(0, len(group), batch_size):
            part = group[b:b + batch_size]
            x = torch.stack([tokens[s - offset:s - offset + length] for s, _, _ in part])
            logits = logits_fn(x)
            if logits.shape[:2] != (len(part), length) or (vocab_size and logits.shape[2] != vocab_size):
                raise ValueError(f"logits_fn returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; "
                                 f"expected ({len(part)}, {length}, {vocab_size or 'V'})")
            rows = np.concatenate([np.full(j1 - j0, r) for r, (s, j0, j1) in enumerate(part)])
            cols = np.concatenate([np.arange(j0 - 1 - s, j1 - 1 - s) for s, j0, j1 in part])
            tgt = np.concatenate([np.arange(j0, j1) for s, j0, j1 in part])
            # (M, V) rows of the scored targets only, in float64 so distributions sum to 1 within 1e-12
            lsm = logits[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)].double().log_softmax(-1)
            tgt_t = torch.from_numpy(tgt).to(device)
            logp[tgt_t - i0] = lsm.gather(1, tokens[tgt_t - offset].long()[:, None])[:, 0]
            if want_entropy:
                entropy[tgt_t - i0] = -(lsm.exp() * lsm).sum(-1)
            hit = np.nonzero(np.isin(tgt, probe))[0]
            for m in hit:
                dists[np.nonzero(probe == tgt[m])[0]] = lsm[m].exp()
    return logp, entropy, dists


class ModelScorer:
    """Causal LM scorer: each target in the sliding window that gives it the most context.

    logits_fn maps int64 (B, T) tokens on `device` to (B, T, vocab_size) logits of a causal LM.
    Keeps only the last seq_len tokens of history; no state besides the token history, so the
    score-first rule holds trivially.
    """

    def __init__(self, logits_fn, seq_len: int, stride: int, vocab_size: int, device="cpu", batch_size: int = 32):
        sliding_plan(1, 1, seq_len, stride)  # validates seq_len/stride
        self.logits_fn, self.seq_len, self.stride = logits_fn, seq_len, stride
        self.vocab_size, self.device, self.batch_size = vocab_size, torch.device(device), batch_size
        self.history, self.offset = None, 0

    def begin(self, first_token: int) -> None:
        first = _scoring_tokens([first_token], self.vocab_size, "ModelScorer.begin")
        self.history, self.offset = torch.from_numpy(first).to(self.device), 0

    def score_chunk_with_entropy(self, chunk, probe=()):
        """(logp, dists, entropy in nats) for the chunk; entropy of the full model distribution."""
        if self.history is None:
            raise RuntimeError("ModelScorer.score_chunk called before begin(first_token)")
        chunk = _scoring_tokens(chunk, self.vocab_size, "ModelScorer.score_chunk")
        a = self.offset + len(self.history)  # global index of chunk[0]
        self.history = torch.cat([self.history, torch.from_numpy(chunk).to(self.device)])
        plan = sliding_plan(a, a + len(chunk), self.seq_len, self.stride)
        probe_global = a + np.asarray(probe, dtype=np.int64)
        logp, entropy, dists = _scoring_run_plan(self.logits_fn, self.history, self.offset, plan,
                                                 self.batch_size, self.vocab_size, probe_global, True)
        keep = max(0, len(self.history) - self.seq_len)  # later windows start >= next target - seq_len
        self.history, self.offset = self.history[keep:], self.offset + keep
        return logp.cpu().numpy(), dists.cpu().numpy(), entropy.cpu().numpy()

    def score_chunk(self, chunk, probe=()):
        """(logp (len(chunk),), dists (len(probe), V)) under the sliding-window plan."""
        logp, dists, _ = self.score_chunk_with_entropy(chunk, probe)
        return logp, dists


def entropy_mixing_weight(entropy_nats):
    """n-gram weight a = 0.20 + 0.55 * sigmoid(2 (H - 3)), H = model entropy in nats (prefix-only)."""
    h = np.asarray(entropy_nats, dtype=np.float64)
    return 0.20 + 0.55 / (1.0 + np.exp(-2.0 * (h - 3.0)))


class MixtureScorer:
    """p = (1 - a) p_model + a p_ngram, a = weight_fn(model entropy): a true distribution, prefix-only.

    model_scorer must offer score_chunk_with_entropy (ModelScorer does); both parts score the chunk
    before either updates, so the mixture is score-first whenever its parts are.
    """

    def __init__(self, model_scorer, ngram_scorer, weight_fn=entropy_mixing_weight):
        if model_scorer.vocab_size != ngram_scorer.vocab_size:
            raise ValueError(f"MixtureScorer: vocab sizes differ ({model_scorer.vocab_size} vs {ngram_scorer.vocab_size})")
        self.model, self.ngram, self.weight_fn = model_scorer, ngram_scorer, weight_fn
        self.vocab_size = model_scorer.vocab_size

    def begin(self, first_token: int) -> None:
        self.model.begin(first_token)
        self.ngram.begin(first_token)

    def score_chunk(self, chunk, probe=()):
        """(logp, dists) of the mixture; the parts update after their own scores are fixed."""
        lp_model, d_model, entropy = self.model.score_chunk_with_entropy(chunk, probe)
        lp_ngram, d_ngram = self.ngram.score_chunk(chunk, probe)
        a = np.asarray(self.weight_fn(entropy), dtype=np.float64)
        if a.shape != lp_model.shape or not np.all((a >= 0.0) & (a <= 1.0)):
            raise ValueError("MixtureScorer: weight_fn must return one weight in [0, 1] per token")
        with np.errstate(divide="ignore"):  # a = 0 or 1 gives log 0 = -inf, which logaddexp handles
            logp = np.logaddexp(np.log1p(-a) + lp_model, np.log(a) + lp_ngram)
        ap = a[np.asarray(probe, dtype=np.int64)][:, None]
        return logp, (1.0 - ap) * d_model + ap * d_ngram


@torch.no_grad()
def eval_sliding(logits_fn, tokens: torch.Tensor, seq_len: int, stride: int, byte_tables, *, rank: int = 0,
                 world_size: int = 1, batch_size: int = 32, progress: bool = False) -> dict:
    """Sliding-window evaluation: every target of tokens[1:] scored once, with the most context.

    tokens: 1-D int tensor on the device logits_fn runs on. The window plan (`sliding_plan`) is cut
    into world_size contiguous blocks; each rank sums nll (nats) and exact bytes of its targets,
    then they are all-reduced when torch.distributed is initialised.
    Returns dict(val_loss (nats/token), val_bpb, tokens, bytes).
    """
    n = int(tokens.numel())
    if tokens.ndim != 1 or n < 2:
        raise ValueError(f"eval_sliding needs a 1-D tensor of >= 2 tokens, got shape {tuple(tokens.shape)}")
    plan = sliding_plan(1, n, seq_len, stride)
    mine = plan[len(plan) * rank // world_size:len(plan) * (rank + 1) // world_size]
    tokens_np = tokens.cpu().numpy().astype(np.int64)
    nll_sum, n_bytes, n_targets = 0.0, 0, 0
    step = max(1, len(mine) // 10)
    for b in range(0, len(mine), step * batch_size):  # blocks of whole windows, for progress lines
        block = mine[b:b + step * batch_size]
        logp, _, _ = _scoring_run_plan(logits_fn, tokens, 0, block, batch_size, None)
        nll_sum -= float(logp.sum())
        j0, j1 = block[0][1], block[-1][2]
        if isinstance(byte_tables, np.ndarray):  # bytes of every target (e.g. from a CaseOps sidecar)
            n_bytes += int(byte_tables[j0 - 1:j1 - 1].sum())
        else:
            n_bytes += int(target_bytes(tokens_np[j0 - 1:j1 - 1], tokens_np[j0:j1], byte_tables).sum())
        n_targets += j1 - j0
        if progress and rank == 0:
            print(f"eval_sliding_progress:{min(b + len(block), len(mine))}/{len(mine)} windows", flush=True)
    totals = torch.tensor([nll_sum, float(n_targets), float(n_bytes)], dtype=torch.float64, device=tokens.device)
    all_reduce_(totals)
    nll_sum, n_targets, n_bytes = float(totals[0]), int(round(float(totals[1]))), int(round(float(totals[2])))
    return dict(val_loss=nll_sum / n_targets, val_bpb=bits_per_byte(nll_sum, n_bytes), tokens=n_targets, bytes=n_bytes)
