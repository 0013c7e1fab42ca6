"""The audit passes the n-gram scorer on real data and catches the three kinds of invalid scorer."""
import numpy as np
import pytest

from lila_golf.tools.audit import main, run_audit
from lila_golf.core.data import read_shard
from lila_golf.core.scoring import NgramScorer

V = 1024


@pytest.fixture(scope="module")
def val_head(mini_data):
    return read_shard(mini_data / "fineweb_val_000000.bin", vocab_size=V)[:20000].astype(np.int64)


class TargetInKeyScorer:
    """Built like the disallowed records (PR #779 family): hashed counts with the target inside the
    full key, p(target) = min(full, ctx) / ctx at the highest order with ctx >= 2, mixed with a
    uniform 'model'. Score-first, causal, but its distribution over all tokens does not sum to 1."""

    vocab_size = V
    buckets, orders, primes = 1 << 12, range(2, 8), [36313, 27191, 51647, 81929, 131071, 174763, 233017]

    def begin(self, first_token):
        self.history = np.array([first_token])
        self.ctx = np.zeros((len(self.orders), self.buckets))
        self.full = np.zeros((len(self.orders), self.buckets))

    def _ctx_hash(self, window, i, order):
        h = 0
        for k in range(order - 1):
            h ^= int(window[i - order + 1 + k]) * self.primes[k]
        return h

    def _prob(self, window, i, targets):
        for oi in reversed(range(len(self.orders))):
            order = self.orders[oi]
            if i < order - 1:
                continue
            h = self._ctx_hash(window, i, order)
            c = self.ctx[oi, h % self.buckets]
            if c >= 2:
                full = self.full[oi, (h ^ (targets * self.primes[order - 1])) % self.buckets]
                return 0.5 / V + 0.5 * np.minimum(full, c) / c
        return np.full(np.shape(targets), 1.0 / V)

    def score_chunk(self, chunk, probe=()):
        window = np.concatenate([self.history, chunk])
        s = len(self.history)
        logp = np.log([self._prob(window, i, window[i]) for i in range(s, len(window))])
        dists = np.array([self._prob(window, s + j, np.arange(V)) for j in probe]).reshape(len(probe), V)
        for i in range(s, len(window)):  # update after scoring, as those records did
            for oi, order in enumerate(self.orders):
                if i >= order - 1:
                    h = self._ctx_hash(window, i, order)
                    self.ctx[oi, h % self.buckets] += 1
                    self.full[oi, (h ^ (int(window[i]) * self.primes[order - 1])) % self.buckets] += 1
        self.history = window[-8:]
        return logp, dists


class UpdateFirstScorer(NgramScorer):
    """Counts the chunk before scoring it: a valid-looking distribution that already saw x_t."""

    def score_chunk(self, chunk, probe=()):
        window = np.concatenate([self.history, chunk])
        start = len(self.history)
        self.lm.update(window, start)
        logp = self.lm.logprob(window, start)
        dists = self.lm.distributions(window, start + np.asarray(probe, dtype=np.int64))
        self.history = window[-(self.max_order - 1):]
        return logp, dists


class PeekingScorer(NgramScorer):
    """Normalised, score-first n-gram, but it moves 10% of the mass onto the NEXT token of the chunk."""

    def score_chunk(self, chunk, probe=()):
        chunk = np.asarray(chunk)
        window = np.concatenate([self.history, chunk])
        start = len(self.history)
        p = 0.9 * np.exp(self.lm.logprob(window, start))
        dists = 0.9 * self.lm.distributions(window, start + np.asarray(probe, dtype=np.int64))
        nxt = np.append(chunk[1:], chunk[-1])  # the future, read from the chunk
        p += 0.1 * (chunk == nxt)
        dists[np.arange(len(probe)), nxt[np.asarray(probe, dtype=np.int64)]] += 0.1
        self.lm.update(window, start)
        self.history = window[-(self.max_order - 1):]
        return np.log(p), dists


def verdicts(results):
    return {r.condition: r.passed for r in results}


def test_ngram_scorer_passes_all_conditions(val_head):
    results = run_audit(lambda: NgramScorer(V), val_head, n_probe=8, n_check=2, chunk_size=2048)
    assert verdicts(results) == {"C1": True, "C2": True, "C3": True, "C4": True}, [r.line() for r in results]


def test_target_in_hash_key_scorer_fails_normalisation(val_head):
    results = run_audit(TargetInKeyScorer, val_head[:6000], n_probe=8, n_check=1, chunk_size=1000)
    c2 = next(r for r in results if r.condition == "C2")
    assert not c2.passed, c2.line()


def test_update_before_scoring_fails_c3(val_head):
    results = run_audit(lambda: UpdateFirstScorer(V, max_order=6), val_head, n_probe=4, n_check=2, chunk_size=2048)
    assert not verdicts(results)["C3"], [r.line() for r in results]


def test_peeking_at_future_tokens_fails_c1(val_head):
    results = run_audit(lambda: PeekingScorer(V, max_order=6), val_head, n_probe=4, n_check=2, chunk_size=2048)
    v = verdicts(results)
    assert not v["C1"] and v["C2"], [r.line() for r in results]


def test_cli_exit_codes(mini_data, capsys):
    shard = str(mini_data / "fineweb_val_000000.bin")
    assert main(["--scorer", "ngram", "--max-tokens", "3000", "--n-check", "1", shard]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "audit_score" in out
    assert main(["--scorer", "tests.test_audit:make_update_first", "--max-tokens", "3000", "--n-check", "1",
                 "--chunk-size", "512", shard]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["--scorer", "nonexistent", shard]) == 2


def make_update_first():
    return UpdateFirstScorer(V, max_order=6)
