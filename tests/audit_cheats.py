"""Scorers built to cheat, each in one of the ways the audit must catch, around any honest scorer.

    scorer = CheatingScorer(NgramScorer(1024), kind="misreport", fraction=0.01)

A cheat applies at the positions t whose hash (a secret key, not the audit's seed) falls under
`fraction`: about that fraction of the stream, spread like independent coin flips; or, given
`block=(start, length)`, at one contiguous run of positions (the hardest placement for probes). Kinds:

- misreport: reports log p(x_t) + log 2 (capped at 0); the distributions it returns are honest.
- unnormalised: the same inflated p(x_t), and the distribution it returns agrees with it (sums > 1).
- probe_aware: misreports only where it is NOT probed (honest wherever it is looked at).
- probe_set: misreports only in chunks with no probe at all (an eval pass has none).
- update_first: scores after absorbing x_t, as one count added before scoring: q_t = (p_t + e_{x_t}) / 2,
  returned consistently (normalised, agrees with the log-prob).
- peek_future: q_t = (p_t + e_{x_{t+1}}) / 2, x_{t+1} read from the chunk (normalised, consistent).

BigramScorer is a fast honest scorer (add-1/2 bigram counts, absorbed after each chunk) for measuring
the audit's detection rates over many seeds (benchmarks/audit_detection.py).
"""
import numpy as np

CHEAT_KINDS = ("misreport", "unnormalised", "probe_aware", "probe_set", "update_first", "peek_future")


def cheat_positions(t: np.ndarray, fraction: float, key: int = 0x5EC2E7) -> np.ndarray:
    """Bool per global position: a fixed pseudo-random subset of about `fraction` of positions."""
    h = (t.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(29)
    h = (h * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(32)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0 ** 32 < fraction


class CheatingScorer:
    """An honest `inner` scorer with one cheat applied at a fraction of positions (module docstring)."""

    def __init__(self, inner, kind: str, fraction: float, key: int = 0x5EC2E7, block=None):
        if kind not in CHEAT_KINDS:
            raise ValueError(f"unknown cheat {kind!r}")
        self.inner, self.kind, self.fraction, self.key, self.block = inner, kind, fraction, key, block
        self.vocab_size = inner.vocab_size
        self.pos = 1

    def begin(self, first_token):
        self.inner.begin(first_token)
        self.pos = 1

    def score_chunk(self, chunk, probe=()):
        chunk, probe = np.asarray(chunk, dtype=np.int64), np.asarray(probe, dtype=np.int64)
        logp, dists = self.inner.score_chunk(chunk, probe)
        logp, dists = np.array(logp, dtype=np.float64), np.array(dists, dtype=np.float64)
        n = len(chunk)
        t = self.pos + np.arange(n)
        if self.block is None:
            cheat = cheat_positions(t, self.fraction, self.key)
        else:
            cheat = (t >= self.block[0]) & (t < self.block[0] + self.block[1])
        self.pos += n
        if self.kind == "probe_aware":
            cheat[probe] = False
        if self.kind == "probe_set" and len(probe):
            cheat[:] = False
        rows = np.nonzero(cheat[probe])[0]  # probed rows at cheat positions
        at = probe[rows]
        if self.kind in ("misreport", "unnormalised", "probe_aware", "probe_set"):
            logp[cheat] = np.minimum(0.0, logp[cheat] + np.log(2.0))
            if self.kind == "unnormalised":
                dists[rows, chunk[at]] = np.exp(logp[at])
            return logp, dists
        seen = chunk if self.kind == "update_first" else np.append(chunk[1:], chunk[-1])
        p = np.exp(logp)
        logp[cheat] = np.log(0.5 * p[cheat] + 0.5 * (chunk[cheat] == seen[cheat]))
        dists[rows] *= 0.5
        dists[rows, seen[at]] += 0.5
        return logp, dists


class BigramScorer:
    """Honest and fast: p(x | prev) = (c(prev, x) + 1/2) / (c(prev) + V/2), counts absorbed after scoring."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.counts, self.prev = None, None

    def begin(self, first_token):
        self.counts = np.zeros((self.vocab_size, self.vocab_size))
        self.prev = int(first_token)

    def score_chunk(self, chunk, probe=()):
        chunk, probe = np.asarray(chunk, dtype=np.int64), np.asarray(probe, dtype=np.int64)
        prev = np.concatenate([[self.prev], chunk[:-1]])
        totals = self.counts.sum(axis=1) + self.vocab_size / 2
        logp = np.log((self.counts[prev, chunk] + 0.5) / totals[prev])
        dists = (self.counts[prev[probe]] + 0.5) / totals[prev[probe], None]
        np.add.at(self.counts, (prev, chunk), 1.0)  # score first, then count
        self.prev = int(chunk[-1])
        return logp, dists
