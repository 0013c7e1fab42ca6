"""The audit passes every scorer of ours on real data and catches scorers built to cheat: hashed
target-in-key counts, updating before scoring, peeking ahead, and the cheats of tests/audit_cheats.py
(on a fraction of positions, where not probed, by probe set, by instance)."""
import numpy as np
import pytest
import torch

from lila_golf.tools.audit import main, run_audit
from lila_golf.core.data import read_shard
from lila_golf.core.model import GPT, GPTConfig
from lila_golf.core.scoring import MixtureScorer, ModelScorer, NgramScorer
from tests.audit_cheats import BigramScorer, CheatingScorer

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


# ----------------------------------------------------------------- cheats the old audit let through

SEEDS = range(5)


def caught(results) -> bool:
    return not all(r.passed for r in results)


@pytest.mark.parametrize("kind,fraction,condition", [
    ("misreport", 0.01, "C2"),        # wrong log p on 1% of targets, honest distributions
    ("unnormalised", 0.01, "C2"),     # distributions that agree with it but sum to more than 1
    ("probe_aware", 0.01, "C4"),      # honest wherever probed, cheats on 1% of the rest
    ("probe_set", 0.01, "C4"),        # cheats only in chunks nothing is probed in (an eval pass)
    ("update_first", 0.20, "C3"),     # x_t counted before scoring it, on 20% of targets
    ("peek_future", 0.20, "C1"),      # mass moved onto x_{t+1}, on 20% of targets
])
def test_cheating_on_a_fraction_of_positions_is_caught_at_every_seed(val_head, kind, fraction, condition):
    tokens = val_head[:16385]
    for seed in SEEDS:  # the default audit settings, a 2048-token chunk
        results = run_audit(lambda: CheatingScorer(BigramScorer(V), kind, fraction), tokens, chunk_size=2048, seed=seed)
        assert not {r.condition: r.passed for r in results}[condition], (seed, [r.line() for r in results])


_instances = []


class FirstInstanceCheats(NgramScorer):
    """Cheats (misreports 1% of targets) only in the first instance of the process, as an eval makes one."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        _instances.append(self)
        self.cheat = CheatingScorer(self, "misreport", 0.01) if len(_instances) == 1 else None

    def begin(self, first_token):
        super().begin(first_token)
        if self.cheat is not None:
            self.cheat.pos = 1

    def score_chunk(self, chunk, probe=()):
        if self.cheat is None:
            return super().score_chunk(chunk, probe)
        self.cheat.inner, cheat = _Honest(self), self.cheat
        return cheat.score_chunk(chunk, probe)


class _Honest:
    def __init__(self, scorer):
        self.scorer, self.vocab_size = scorer, scorer.vocab_size

    def score_chunk(self, chunk, probe=()):
        return NgramScorer.score_chunk(self.scorer, chunk, probe)


def test_a_scorer_that_cheats_in_one_instance_only_is_caught(val_head):
    _instances.clear()
    results = run_audit(lambda: FirstInstanceCheats(V, max_order=4), val_head[:8193], chunk_size=2048, seed=3)
    assert not {r.condition: r.passed for r in results}["C4"], [r.line() for r in results]


def test_every_scorer_of_ours_passes_with_default_settings(val_head):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)).eval()
    tokens = val_head[:3001]
    makers = {"ngram": lambda: NgramScorer(V, max_order=5),
              "model": lambda: ModelScorer(model, 64, 16, V),
              "model+ngram": lambda: MixtureScorer(ModelScorer(model, 64, 16, V), NgramScorer(V, max_order=5))}
    for name, make in makers.items():
        results = run_audit(make, tokens, chunk_size=512, n_check=6, seed=11)
        assert all(r.passed for r in results), (name, [r.line() for r in results])
        assert results.probed >= 512 and results.seed == 11


def test_default_seed_is_random_and_printed(mini_data, capsys):
    shard = str(mini_data / "fineweb_val_000000.bin")
    args = ["--max-tokens", "3000", "--n-check", "2", "--n-probe", "64", "--chunk-size", "512", shard]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    seeds = [out.split("audit_seed:")[1].split()[0] for out in (first, second)]
    assert seeds[0] != seeds[1]  # 1 in 2^31 to collide
    assert main(["--seed", seeds[0], *args]) == 0
    again = capsys.readouterr().out
    coverage = [l for l in again.splitlines() if l.startswith("audit_coverage")]
    assert coverage == [l for l in first.splitlines() if l.startswith("audit_coverage")] and "1-(1-f)^" in coverage[0]
