"""BackoffNgram against an exact dictionary reference; normalisation under forced hash collisions."""
from collections import defaultdict

import numpy as np
import pytest

from lila_golf.ngram import BackoffNgram, NgramHashTable


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


class CollidingNgram(BackoffNgram):
    """All hashed contexts of a length squeezed into 4 values: massive collisions, by design."""

    def _ctx_key(self, g, tokens, pos, k):
        key = super()._ctx_key(g, tokens, pos, k)
        if k <= 1:
            return key
        keep = np.uint64(3 << self.xbits) | np.uint64(1 << 63)
        return key & keep


def test_hash_collisions_only_merge_contexts_and_stay_normalised():
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 30, size=3000)
    lm = CollidingNgram(30, max_order=6)
    lm.update(tokens[:2000], 1)
    positions = np.arange(2000, 3000, 50)
    dists = lm.distributions(tokens, positions)
    np.testing.assert_allclose(dists.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.log(dists[np.arange(len(positions)), tokens[positions]]),
                                  lm.logprob(tokens, 2000)[positions - 2000])


def test_hash_table_insert_find_with_duplicates_and_growth():
    rng = np.random.default_rng(3)
    table = NgramHashTable(4)
    keys = rng.integers(1, 1 << 62, size=5000, dtype=np.uint64) | np.uint64(1 << 63)
    batch = np.concatenate([keys, keys[:1000]])  # duplicates inside one batch
    slots = table.find(batch, insert=True)
    assert table.log2_capacity >= 13  # grew from 16 slots
    assert np.array_equal(slots[:1000], slots[5000:])
    assert len(np.unique(slots[:5000])) == 5000
    assert np.array_equal(table.find(keys), slots[:5000])
    absent = rng.integers(1, 1 << 62, size=100, dtype=np.uint64)  # top bit clear: never inserted
    assert np.all(table.find(absent) == -1)


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
