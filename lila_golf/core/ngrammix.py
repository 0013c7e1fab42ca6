"""The per-token online n-gram and the learned mixer that puts it under the model.

    ng = online_ngram(tokens, vocab_size=1024, max_order=8)      # every target at once, exactly
    logp = learned_mixture(model_logp, model_entropy, ng, MixerConfig())

**The n-gram.** `online_ngram` returns, for every target t = 1..N-1, log p(x_t | x_<t) of the
interpolated backoff model of lila_golf/core/ngram.py (`BackoffNgram`, same formula, same discount
and beta) whose counts hold every target before t: the n-gram a scorer gets by scoring one token,
then counting it, then the next. It is computed for all targets at once by sorting rather than by
feeding a hash table token by token; tests/test_ngrammix.py checks it equals BackoffNgram fed one
token at a time, bit for bit. For the level with context length k (k tokens before the target):

    c(h_t)    = #{s < t : h_s = h_t}                 rank of t-1 among equal k-grams, in position order
    c(h_t,x_t)= #{s < t : h_s = h_t, x_s = x_t}      rank among equal (k-gram, next token) pairs
    u(h_t)    = #{x : (h_t, x) occurred before t}    running count of first occurrences in h_t's group

Context groups are refined level by level by extending every k-gram one token to the LEFT, so all
contexts of a target end with the same token x_{t-1}: `own_tokens` restricts the work to targets
whose previous token is in a set, and ranks that take disjoint sets of the vocabulary compute
disjoint targets with results that do not depend on how the vocabulary was split (world-size
independent, bit for bit). k-grams that occur once cannot have an earlier occurrence and are pruned,
so high orders cost little. The unigram level (empty context) is global and cheap (one radix sort).

Alongside logp it returns prefix-only features for the mixer: the longest context with an earlier
occurrence (`order`, 0 = none, then the n-gram order k + 1), its count c(h) and its distinct
continuations u(h). They never look at x_t.

**The mixer.** p = (1 - a_t) p_model + a_t p_ngram, a true distribution whenever a_t does not depend on
x_t. `learned_mixture` sets a_t = sigmoid(w . f_t), f_t = [1, model entropy, one-hot n-gram order,
log(1 + c(h)), u / (c + u)], with w learned online: the targets are cut into mixer chunks on a fixed
grid (small first, growing later), each chunk is scored with the current w, and only then w takes one
Adam step on that chunk's mixed loss. w starts at a = sigmoid(init_bias) ~ 0.05 for every feature, so
the mixture starts close to the model alone and moves only as far as already-scored tokens justify.
"""
import math
from dataclasses import dataclass

import numpy as np

from .ngram import BackoffNgram
from .scoring import _scoring_tokens


@dataclass
class NgramArrays:
    """Per-target n-gram results, index t - 1 for target t."""
    logp: np.ndarray       # float64 (N-1,), log p_ngram(x_t | x_<t)
    order: np.ndarray      # int8 (N-1,), longest context seen before, as an n-gram order (0 = none)
    ctx_count: np.ndarray  # float32 (N-1,), c(h) of that context (a feature: float32 is precise enough)
    distinct: np.ndarray   # float32 (N-1,), u(h) of that context


def _ngram_sort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort; keys below 2**16 use numpy's radix sort."""
    if keys.size and int(keys.max()) < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _ngram_run_starts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For keys in sorted order: (index where each run of equal keys starts, run sizes)."""
    n = len(sorted_keys)
    new = np.ones(n, dtype=bool)
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return starts, np.diff(np.append(starts, n))


def _ngram_rank(sorted_keys: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal keys (0 for the first)."""
    starts, sizes = _ngram_run_starts(sorted_keys)
    return np.arange(len(sorted_keys)) - np.repeat(starts, sizes)


def _ngram_interpolate(p, c_hx, c_h, u_h, discount: float, beta: float):
    """One level of the backoff (ngram.py's formula, same operation order: bit-identical results)."""
    return (np.maximum(c_hx - discount, 0.0) + (discount + beta) * u_h * p) / (c_h + beta * u_h)


def online_ngram(tokens, vocab_size: int, max_order: int = 8, discount: float = 0.5, beta: float = 3.0,
                 own_tokens: np.ndarray | None = None) -> NgramArrays:
    """Per-token online backoff n-gram over `tokens` (module docstring). own_tokens: bool (vocab_size,);
    only targets whose previous token is marked are computed (the others get logp 0, order 0)."""
    x = np.asarray(tokens, dtype=np.int64)
    n = len(x)
    if x.ndim != 1 or n < 2 or max_order < 1:
        raise ValueError(f"online_ngram needs >= 2 tokens and max_order >= 1 (got {x.shape}, {max_order})")
    if int(x.min()) < 0 or int(x.max()) >= vocab_size:
        raise ValueError(f"online_ngram: token id outside the vocabulary [0, {vocab_size})")
    mine = np.ones(n - 1, dtype=bool) if own_tokens is None else np.asarray(own_tokens, dtype=bool)[x[:-1]]
    x = x.astype(np.int32)  # keys are built in int64 from int64 group ids; the stream itself fits int32
    out = NgramArrays(np.zeros(n - 1), np.zeros(n - 1, dtype=np.int8), np.zeros(n - 1, dtype=np.float32),
                      np.zeros(n - 1, dtype=np.float32))
    p = np.full(n - 1, 1.0 / vocab_size)
    _ngram_unigram_level(x, mine, p, out, discount, beta)
    positions = np.flatnonzero(mine).astype(np.int32)  # contexts q = t - 1 of our targets: level 1 groups them by x_q
    order = _ngram_sort(x[positions])
    group = x[positions][order]
    positions = positions[order]
    for k in range(1, max_order):
        positions, group = _ngram_prune(positions, group)
        if not positions.size:
            break
        _ngram_level(x, positions, group, k, p, out, vocab_size, discount, beta)
        if k + 1 < max_order:
            positions, group = _ngram_extend_left(x, positions, group, k, vocab_size)
    out.logp = np.where(mine, np.log(p), 0.0)
    return out


def _ngram_unigram_level(x, mine, p, out: NgramArrays, discount: float, beta: float) -> None:
    """Level 0 (empty context): counts over all earlier targets, for our targets (int32 while whole-stream)."""
    targets = x[1:]
    order = _ngram_sort(targets)
    c_hx = np.empty(len(targets), dtype=np.int32)
    c_hx[order] = _ngram_rank(targets[order])
    del order
    first = c_hx == 0
    u_h = np.cumsum(first, dtype=np.int32) - first  # distinct tokens among earlier targets
    act = np.flatnonzero(mine)
    act = act[act > 0]  # target t = act + 1 has t - 1 = act earlier targets
    c_h = act.astype(np.float64)
    p[act] = _ngram_interpolate(p[act], c_hx[act].astype(np.float64), c_h, u_h[act].astype(np.float64), discount, beta)
    out.order[act], out.ctx_count[act], out.distinct[act] = 1, c_h, u_h[act]


def _ngram_prune(positions, group):
    """Keep the contexts whose k-gram occurs at least twice (a single occurrence has no earlier one)."""
    _, sizes = _ngram_run_starts(group)
    keep = np.repeat(sizes >= 2, sizes)
    return positions[keep], group[keep]


def _ngram_level(x, positions, group, k: int, p, out: NgramArrays, vocab_size: int, discount: float, beta: float):
    """Level k: contexts q = positions (sorted by (k-gram group, q)), targets q + 1."""
    c_h = _ngram_rank(group).astype(np.int32)  # earlier occurrences of the same k-gram
    pair = group.astype(np.int64) * vocab_size + x[positions + 1]
    order = _ngram_sort(pair)
    c_hx = np.empty(len(positions), dtype=np.int32)
    c_hx[order] = _ngram_rank(pair[order])
    del pair, order
    first = c_hx == 0
    before = np.cumsum(first, dtype=np.int32) - first  # first occurrences of pairs before this element
    u_h = before - before[np.arange(len(group), dtype=np.int32) - c_h]  # ... within this k-gram's group
    act = np.flatnonzero(c_h >= 1)
    t = positions[act]  # target index t - 1 = q
    ch, uh = c_h[act].astype(np.float64), u_h[act].astype(np.float64)
    p[t] = _ngram_interpolate(p[t], c_hx[act].astype(np.float64), ch, uh, discount, beta)
    out.order[t], out.ctx_count[t], out.distinct[t] = k + 1, ch, uh


def _ngram_extend_left(x, positions, group, k: int, vocab_size: int):
    """(k+1)-gram groups from k-gram groups: split each group by the token k places before its end."""
    ok = positions >= k
    positions, group = positions[ok], group[ok]
    _, sizes = _ngram_run_starts(group)
    run = np.repeat(np.arange(len(sizes)), sizes)
    key = run * vocab_size + x[positions - k]
    order = _ngram_sort(key)
    return positions[order], key[order]


# --------------------------------------------------------------------------- the learned mixer

MIX_MAX_CHUNK = 65536  # mixer chunks grow to this (one Adam step each): ~1,000 steps over 62M targets


@dataclass
class MixerConfig:
    max_order: int = 8       # the n-gram's max order (sets the one-hot width)
    lr: float = 0.1          # Adam step size of the mixing weights
    min_chunk: int = 256     # first mixer chunks; a chunk starting at target i has clamp(i / 32, min, max)
    init_bias: float = -3.0  # a = sigmoid(-3) ~ 0.047 before any update


def mixer_chunks(num_targets: int, min_chunk: int) -> list[int]:
    """Boundaries of the mixer chunks (target indices 0 .. num_targets): a function of position only."""
    bounds = [0]
    while bounds[-1] < num_targets:
        size = min(MIX_MAX_CHUNK, max(min_chunk, bounds[-1] // 32))
        bounds.append(min(num_targets, bounds[-1] + size))
    return bounds


def mixer_features(entropy, ng: NgramArrays, i0: int, i1: int, max_order: int) -> np.ndarray:
    """(i1 - i0, max_order + 5) prefix-only features of targets i0 .. i1 - 1: 1, model entropy / 4
    (nats), one-hot n-gram order 0..max_order, log(1 + c(h)) / 5, u(h) / (c(h) + u(h))."""
    n = i1 - i0
    c, u = ng.ctx_count[i0:i1].astype(np.float64), ng.distinct[i0:i1].astype(np.float64)
    f = np.zeros((n, max_order + 5))
    f[:, 0] = 1.0
    f[:, 1] = np.asarray(entropy[i0:i1], dtype=np.float64) / 4.0
    f[np.arange(n), 2 + np.minimum(ng.order[i0:i1].astype(np.int64), max_order)] = 1.0
    f[:, max_order + 3] = np.log1p(c) / 5.0
    f[:, max_order + 4] = u / np.maximum(c + u, 1.0)
    return f


def _mix_logp(z, model_logp, ngram_logp):
    """log((1 - a) p_model + a p_ngram) with a = sigmoid(z), and log a, log(1 - a)."""
    log_a, log_1a = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
    return np.logaddexp(log_1a + model_logp, log_a + ngram_logp), log_a, log_1a


def learned_mixture(model_logp, model_entropy, ng: NgramArrays, cfg: MixerConfig, weights_out=None):
    """Mixed log-probabilities of every target (module docstring): each mixer chunk is scored with the
    weights learned from earlier chunks only. Returns (logp float64 (n,), mean mixing weight a);
    weights_out: optional float64 (n,) array that receives every a_t.

    z = w . f with f = mixer_features(...) is computed without building f: the one-hot block is a
    gather of w and its gradient a bincount (same numbers, far less memory traffic)."""
    model_logp = np.asarray(model_logp, dtype=np.float64)
    n, K = len(model_logp), cfg.max_order
    if not (len(model_entropy) == len(ng.logp) == n):
        raise ValueError(f"learned_mixture: arrays of different lengths ({n}, {len(model_entropy)}, {len(ng.logp)})")
    w = np.zeros(K + 5)
    w[0] = cfg.init_bias
    adam = (np.zeros_like(w), np.zeros_like(w))
    out, a_sum = np.empty(n), 0.0
    bounds = mixer_chunks(n, cfg.min_chunk)
    for step, (i0, i1) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        h = np.asarray(model_entropy[i0:i1], dtype=np.float64) / 4.0
        order = np.minimum(ng.order[i0:i1].astype(np.int64), K)
        c, u = ng.ctx_count[i0:i1].astype(np.float64), ng.distinct[i0:i1].astype(np.float64)
        log_c, ratio = np.log1p(c) / 5.0, u / np.maximum(c + u, 1.0)
        z = w[0] + w[1] * h + w[2 + order] + w[K + 3] * log_c + w[K + 4] * ratio
        lp_model, lp_ngram = model_logp[i0:i1], ng.logp[i0:i1]
        mixed, log_a, log_1a = _mix_logp(z, lp_model, lp_ngram)
        out[i0:i1] = mixed  # the chunk's scores are fixed: only now may it move the weights
        a_sum += float(np.exp(log_a).sum())
        if weights_out is not None:
            weights_out[i0:i1] = np.exp(log_a)
        # d(-log mix)/dz = -a (1 - a) (p_ngram - p_model) / mix
        g = np.exp(log_a + log_1a + lp_model - mixed) - np.exp(log_a + log_1a + lp_ngram - mixed)
        grad = np.empty(K + 5)
        grad[0], grad[1] = g.sum(), g @ h
        grad[2:K + 3] = np.bincount(order, weights=g, minlength=K + 1)
        grad[K + 3], grad[K + 4] = g @ log_c, g @ ratio
        _mixer_adam(w, grad / (i1 - i0), adam, cfg.lr, step)
    return out, a_sum / max(n, 1)


def _mixer_adam(w, grad, state, lr: float, step: int, b1: float = 0.9, b2: float = 0.999) -> None:
    m, v = state
    m *= b1
    m += (1 - b1) * grad
    v *= b2
    v += (1 - b2) * grad * grad
    w -= lr * (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step)) + 1e-8)


class NgramMixScorer:
    """The learned mixture as a streaming scorer (lila_golf/core/scoring.py protocol), for the audit
    and for `eval --scorer model+ngram`: the model part is any scorer with score_chunk_with_entropy
    (ModelScorer, TTTScorer, DocTTTScorer). Each call recomputes the n-gram and the mixer over the
    whole prefix (their values at a target do not depend on anything after it), so a pass costs
    O(N^2 / chunk): for audits and the val head; the final evaluation computes them once
    (core/final_eval.py). The distributions at probe positions use BackoffNgram (ngram.py) counted
    on the prefix: an independent path to the same n-gram."""

    def __init__(self, model_scorer, max_order: int = 8, discount: float = 0.75, beta: float = 0.0,
                 mixer: MixerConfig | None = None):
        self.model, self.vocab_size = model_scorer, model_scorer.vocab_size
        self.max_order, self.discount, self.beta = max_order, discount, beta
        self.mixer = mixer or MixerConfig(max_order=max_order)
        if self.mixer.max_order != max_order:
            raise ValueError(f"NgramMixScorer: mixer max_order {self.mixer.max_order} != n-gram max_order {max_order}")
        self.tokens = None

    def begin(self, first_token: int) -> None:
        self.model.begin(first_token)
        self.tokens = _scoring_tokens([first_token], self.vocab_size, "NgramMixScorer.begin")
        self.model_logp, self.model_entropy = np.empty(0), np.empty(0)

    def score_chunk(self, chunk, probe=()):
        """(logp, dists) of the mixture for the chunk; nothing here looks past the chunk's targets."""
        if self.tokens is None:
            raise RuntimeError("NgramMixScorer.score_chunk called before begin(first_token)")
        chunk = _scoring_tokens(chunk, self.vocab_size, "NgramMixScorer.score_chunk")
        probe = np.asarray(probe, dtype=np.int64).reshape(-1)
        lp_model, d_model, entropy = self.model.score_chunk_with_entropy(chunk, probe)
        a = len(self.tokens)
        self.tokens = np.concatenate([self.tokens, chunk])
        self.model_logp = np.concatenate([self.model_logp, lp_model])
        self.model_entropy = np.concatenate([self.model_entropy, entropy])
        ng = online_ngram(self.tokens, self.vocab_size, self.max_order, self.discount, self.beta)
        weights = np.empty(len(self.model_logp))
        mixed, _ = learned_mixture(self.model_logp, self.model_entropy, ng, self.mixer, weights)
        dists = np.empty((len(probe), self.vocab_size))
        for i, t in enumerate(a + probe):
            lm = BackoffNgram(self.vocab_size, self.max_order, self.discount, self.beta)
            lm.update(self.tokens[:t], 1)  # every target before t
            w = weights[t - 1]
            dists[i] = (1.0 - w) * d_model[i] + w * lm.distributions(self.tokens[:t + 1], [t])[0]
        return mixed[a - 1:], dists
