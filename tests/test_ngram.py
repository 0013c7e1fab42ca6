"""BackoffNgram against an exact dictionary reference; growth, worst-case probing, capped tables."""
from collections import defaultdict

import numpy as np
import pytest

from lila_golf.core.ngram import BackoffNgram, NgramHashTable


class DictNgram:
    """Reference: exact tuple contexts in Python dicts, the same interpolated backoff formula."""

    def __init__(self, vocab_size, max_order, discount, beta):
        self.V, self.N, self.d, self.beta = vocab_size, max_order, discount, beta
        self.ctx = defaultdict(int)
        self.pair = defaultdict(int)
        self.followers = defaultdict(set)

    def prob(self, history, x):
        p = 1.0 / self.V
        for k in range(self.N):
            if len(history) < k:
                break
            h = tuple(history[len(history) - k:])
            c = self.ctx[h]
            if c == 0:
                break
            u = len(self.followers[h])
            p = (max(self.pair[h + (x,)] - self.d, 0) + (self.d + self.beta) * u * p) / (c + self.beta * u)
        return p

    def update(self, tokens, start):
        for i in range(start, len(tokens)):
            for k in range(min(self.N, i + 1)):
                h = tuple(tokens[i - k:i])
                self.ctx[h] += 1
                self.pair[h + (tokens[i],)] += 1
                self.followers[h].add(tokens[i])


@pytest.mark.parametrize("discount,beta", [(0.7, 1.5), (0.0, 1.0), (1.0, 0.0)])
def test_matches_exact_reference_chunk_by_chunk(discount, beta):
    rng = np.random.default_rng(0)
    # a small vocabulary and repeated phrases so that long contexts recur
    phrase = rng.integers(0, 7, size=40)
    tokens = np.concatenate([phrase, rng.integers(0, 7, size=60), phrase, phrase[:25], rng.integers(0, 7, size=30)])
    lm, ref = BackoffNgram(7, max_order=5, discount=discount, beta=beta), DictNgram(7, 5, discount, beta)
    start = 1
    for end in (20, 21, 90, 150, len(tokens)):
        got = lm.logprob(tokens[:end], start)
        want = [np.log(ref.prob(list(tokens[:i]), int(tokens[i]))) for i in range(start, end)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        lm.update(tokens[:end], start)
        ref.update(list(tokens[:end]), start)
        start = end


def test_distributions_sum_to_one_and_match_fast_path():
    rng = np.random.default_rng(1)
    tokens = np.tile(rng.integers(0, 50, size=300), 4)
    lm = BackoffNgram(50, max_order=6)
    lm.update(tokens[:800], 1)
    positions = np.arange(800, 1200, 37)
    dists = lm.distributions(tokens, positions)
    np.testing.assert_allclose(dists.sum(axis=1), 1.0, atol=1e-12)
    fast = lm.logprob(tokens, 800)[positions - 800]
    np.testing.assert_array_equal(np.log(dists[np.arange(len(positions)), tokens[positions]]), fast)
    assert fast.mean() > np.log(0.5)  # repeated text: the long contexts predict it


def test_hash_table_ids_duplicates_growth_and_limit():
    rng = np.random.default_rng(3)
    table = NgramHashTable(2)
    keys = np.unique(rng.integers(1, 1 << 62, size=5000, dtype=np.uint64))
    batch = np.concatenate([keys[:3000], keys[:1000]])  # repeats inside one batch share one new id
    ids, created = table.add(batch, limit=10 ** 6)
    assert np.array_equal(ids[:1000], ids[3000:]) and np.array_equal(np.sort(ids[:3000]), np.arange(3000))
    assert created[1000:3000].all() and np.all(created[:1000] ^ created[3000:])  # one creator per new key
    ids2, created2 = table.add(keys, limit=4500)  # grows again, moving keys: ids stay; room for 1500 more
    assert np.array_equal(ids2[:3000], ids[:3000]) and created2.sum() == 1500 and table.entries == 4500
    assert table.log2_capacity >= 14  # from 4 slots, load <= 1/2
    assert np.array_equal(np.flatnonzero(ids2 < 0), np.arange(4500, 5000))  # the largest new keys left out
    assert np.array_equal(table.find(keys), ids2)
    absent = rng.integers(1 << 62, 1 << 63, size=100, dtype=np.uint64)
    assert np.all(table.find(absent) == -1)


def test_hash_table_growth_wraps_round(monkeypatch):
    # every probe starts at the last slot, so growing places all keys but one past the end: they wrap
    monkeypatch.setattr(NgramHashTable, "_home",
                        lambda self, keys: np.full(len(keys), (1 << self.log2_capacity) - 1, dtype=np.int64))
    table, keys = NgramHashTable(2), np.arange(1, 301, dtype=np.uint64)
    ids = np.concatenate([table.add(keys[a:a + 50], limit=1000)[0] for a in range(0, 300, 50)])
    assert np.array_equal(ids, np.arange(300)) and np.array_equal(table.find(keys), ids)
    assert np.all(table.find(keys + np.uint64(1000)) == -1)


def tiny_tables(lm):
    """Restart every hashed table at 4 slots, so that tables grow inside almost every update."""
    for m in range(3, lm.max_order + 1):
        lm.tables[m] = NgramHashTable(2)
    return lm


def test_matches_reference_while_tables_grow_and_all_keys_collide(monkeypatch):
    # every key starts its probe at slot 0: the longest probe chains possible, still exact counts
    monkeypatch.setattr(NgramHashTable, "_home", lambda self, keys: np.zeros(len(keys), dtype=np.int64))
    rng = np.random.default_rng(4)
    tokens = np.concatenate([rng.integers(0, 40, size=400), np.tile(rng.integers(0, 40, size=50), 6)])
    lm, ref = tiny_tables(BackoffNgram(40, max_order=6)), DictNgram(40, 6, 0.5, 3.0)
    start = 1
    for end in (30, 200, 500, len(tokens)):
        got = lm.logprob(tokens[:end], start)
        want = [np.log(ref.prob(list(tokens[:i]), int(tokens[i]))) for i in range(start, end)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        lm.update(tokens[:end], start)
        ref.update(list(tokens[:end]), start)
        start = end


def assert_counts_consistent(lm):
    """Every context h: c(h) = sum_x c(h, x) and u(h) = #{x: c(h, x) > 0}, the facts behind sum p = 1."""
    V = lm.vocab_size
    for m in range(1, lm.max_order + 1):
        if m <= 2:
            ids = np.flatnonzero(lm.count[m])
            prefix = ids // V if m == 2 else np.zeros(len(ids), dtype=np.int64)
        else:
            table = lm.tables[m]
            slots = np.flatnonzero(table.keys)
            ids, prefix = table.slot_ids[slots], (table.keys[slots] >> np.uint64(lm.xbits)).astype(np.int64) - 1
            assert np.all(lm.count[m][ids] > 0) and len(ids) == table.entries <= lm.max_entries
        n_prefix = len(lm.ctx_count[m - 1])
        sums = np.bincount(prefix, weights=lm.count[m][ids].astype(np.float64), minlength=n_prefix)
        np.testing.assert_array_equal(lm.ctx_count[m - 1], sums)
        np.testing.assert_array_equal(lm.distinct[m - 1], np.bincount(prefix, minlength=n_prefix))


@pytest.mark.parametrize("max_entries", [None, 40])
def test_capped_tables_keep_consistent_counts_and_normalise(max_entries):
    rng = np.random.default_rng(5)
    tokens = np.concatenate([rng.integers(0, 20, size=1500), np.tile(rng.integers(0, 20, size=60), 10)])
    lm = tiny_tables(BackoffNgram(20, max_order=6, max_entries=max_entries))
    for a, b in ((1, 300), (300, 1000), (1000, 1800)):
        lm.update(tokens[:b], a)
        assert_counts_consistent(lm)
    if max_entries:  # full, and no further; a table never grows past what max_entries keys need
        assert all(lm.tables[m].entries == max_entries for m in range(3, 7))
        assert all(1 << lm.tables[m].log2_capacity <= 4 * max_entries for m in range(3, 7))
    positions = np.arange(1800, len(tokens), 29)
    dists = lm.distributions(tokens, positions)
    np.testing.assert_allclose(dists.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.log(dists[np.arange(len(positions)), tokens[positions]]),
                                  lm.logprob(tokens, 1800)[positions - 1800])


def test_counts_do_not_change_while_scoring():
    tokens = np.arange(100) % 9
    lm = BackoffNgram(9, max_order=4)
    lm.update(tokens[:50], 1)
    first = lm.logprob(tokens, 50)
    lm.distributions(tokens, [60, 70])
    np.testing.assert_array_equal(lm.logprob(tokens, 50), first)


def test_bad_input_is_refused():
    lm = BackoffNgram(10, max_order=3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.logprob(np.array([1, 2, 10]), 1)
    with pytest.raises(ValueError, match="1-D"):
        lm.update(np.zeros((2, 2), dtype=np.int64), 0)
    with pytest.raises(ValueError, match="discount"):
        BackoffNgram(10, discount=1.5)
    with pytest.raises(ValueError, match="max_entries"):
        BackoffNgram(10, max_entries=0)
