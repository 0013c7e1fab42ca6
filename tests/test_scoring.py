"""Scorer protocol, sliding-window plan and evaluation against naive references, mixture normalisation."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lila_golf.core.scoring import (MixtureScorer, ModelScorer, NgramScorer, entropy_mixing_weight, eval_sliding,
                               run_scorer, sliding_plan)

V = 48


class ToyCausalLM(nn.Module):
    """One causal attention layer with learned absolute positions: depends on where the window starts."""

    def __init__(self, vocab_size=V, dim=16, max_len=64):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, vocab_size)
        self.double()  # float64 throughout: windows of different lengths then agree to ~1e-13

    def forward(self, idx):  # (B, T) int64 -> (B, T, V)
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)[:, 0]
        return self.head(x)


def toy_tables():
    """Byte tables like data.build_byte_tables: id 1 is BOS (boundary, 0 bytes), the rest 1-3 bytes."""
    ids = np.arange(V)
    base = (ids % 3 + 1).astype(np.int64)
    base[1] = 0
    boundary = ids == 1
    return SimpleNamespace(base_bytes=base, has_leading_space=(ids % 4 == 0) & ~boundary, is_boundary=boundary)


def toy_tokens(n=203, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, V, size=n)
    tokens[[i for i in (0, 57, 140) if i < n]] = 1  # documents start with BOS
    return tokens


def naive_bytes(tokens, tables):
    return sum(int(tables.base_bytes[t]) + int(tables.has_leading_space[t] and not tables.is_boundary[p])
               for p, t in zip(tokens[:-1], tokens[1:]))


def logp_of(model, context, target):
    with torch.no_grad():
        return float(torch.log_softmax(model(torch.tensor(np.asarray(context))[None])[0, -1], -1)[target])


def test_plan_scores_every_target_once_with_most_context():
    for n, seq_len, stride in [(203, 32, 8), (33, 32, 32), (500, 64, 64), (97, 16, 1)]:
        plan = sliding_plan(1, n, seq_len, stride)
        targets = np.concatenate([np.arange(j0, j1) for _, j0, j1 in plan])
        assert np.array_equal(targets, np.arange(1, n))
        for s, j0, j1 in plan:
            assert s % stride == 0 and j1 - 1 - s <= seq_len
            for i in range(j0, j1):  # brute force: the smallest grid start that still fits i in a window
                best = min(g for g in range(0, i, stride) if i - g <= seq_len)
                assert s == best


def test_eval_sliding_stride_equal_seq_len_is_plain_evaluation():
    model, tokens, tables = ToyCausalLM(), toy_tokens(), toy_tables()
    seq_len = 32
    nll = 0.0
    with torch.no_grad():
        for s in range(0, len(tokens) - 1, seq_len):  # naive non-overlapping loop, last window shorter
            x = torch.tensor(tokens[s:min(s + seq_len, len(tokens) - 1)])[None]
            y = torch.tensor(tokens[s + 1:s + 1 + x.shape[1]])
            nll += float(F.cross_entropy(model(x)[0], y, reduction="sum"))
    out = eval_sliding(model, torch.tensor(tokens), seq_len, seq_len, tables, batch_size=3)
    assert out["tokens"] == len(tokens) - 1
    assert out["bytes"] == naive_bytes(tokens, tables)
    assert out["val_loss"] == pytest.approx(nll / (len(tokens) - 1), abs=1e-12)
    assert out["val_bpb"] == pytest.approx(nll / np.log(2) / out["bytes"], rel=1e-12)


def test_eval_sliding_matches_per_target_reference_and_splits_across_ranks():
    model, tokens, tables = ToyCausalLM(), toy_tokens(), toy_tables()
    seq_len, stride = 32, 8
    ref = 0.0
    for i in range(1, len(tokens)):
        start = 0 if i <= seq_len else -(-(i - seq_len) // stride) * stride
        ref -= logp_of(model, tokens[start:i], tokens[i])
    full = eval_sliding(model, torch.tensor(tokens), seq_len, stride, tables, batch_size=4)
    assert full["val_loss"] * full["tokens"] == pytest.approx(ref, abs=1e-9)
    parts = [eval_sliding(model, torch.tensor(tokens), seq_len, stride, tables, rank=r, world_size=3)
             for r in range(3)]
    assert sum(p["tokens"] for p in parts) == full["tokens"]
    assert sum(p["bytes"] for p in parts) == full["bytes"]
    assert sum(p["val_loss"] * p["tokens"] for p in parts) == pytest.approx(ref, abs=1e-9)


def test_model_scorer_streaming_equals_eval_sliding():
    model, tokens, tables = ToyCausalLM(), toy_tokens(), toy_tables()
    full = eval_sliding(model, torch.tensor(tokens), 32, 8, tables)
    probe = [5, 60, 150, 202]
    for chunk_size in (1, 17, 64, 500):
        logp, dists = run_scorer(ModelScorer(model, 32, 8, V, batch_size=5), tokens, chunk_size, probe)
        assert -logp.sum() == pytest.approx(full["val_loss"] * full["tokens"], abs=1e-9)
        np.testing.assert_allclose(dists.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.log(dists[np.arange(4), tokens[probe]]), logp[np.array(probe) - 1], atol=1e-12)


def test_ngram_scorer_is_score_first():
    tokens = np.tile(toy_tokens(60), 5)
    logp, dists = run_scorer(NgramScorer(V, max_order=4), tokens, 60, probe=[61, 250])
    assert logp[:59].max() == logp[:59].min() == pytest.approx(-np.log(V))  # counts start empty
    assert logp[120:].mean() > np.log(0.5)  # the repeats are predicted once counted
    np.testing.assert_allclose(dists.sum(1), 1.0, atol=1e-12)


def test_mixture_is_normalised_and_uses_entropy_weight():
    model, tokens = ToyCausalLM(), np.tile(toy_tokens(80), 3)
    probe = [3, 100, 200, 239]
    mix = MixtureScorer(ModelScorer(model, 32, 8, V), NgramScorer(V, max_order=4))
    logp, dists = run_scorer(mix, tokens, 40, probe)
    np.testing.assert_allclose(dists.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.log(dists[np.arange(4), tokens[probe]]), logp[np.array(probe) - 1], atol=1e-12)
    lp_m, _ = run_scorer(ModelScorer(model, 32, 8, V), tokens, 40)
    lp_n, _ = run_scorer(NgramScorer(V, max_order=4), tokens, 40)
    model_only = MixtureScorer(ModelScorer(model, 32, 8, V), NgramScorer(V, max_order=4), lambda h: np.zeros_like(h))
    np.testing.assert_allclose(run_scorer(model_only, tokens, 40)[0], lp_m, atol=1e-12)
    assert np.all(logp <= np.maximum(lp_m, lp_n) + 1e-12) and np.all(logp >= np.minimum(lp_m, lp_n) - 1e-12)
    half = MixtureScorer(ModelScorer(model, 32, 8, V), NgramScorer(V, max_order=4), lambda h: np.full_like(h, 0.5))
    np.testing.assert_allclose(run_scorer(half, tokens, 40)[0], np.logaddexp(lp_m, lp_n) - np.log(2), atol=1e-12)
    assert entropy_mixing_weight(3.0) == pytest.approx(0.475)
    assert entropy_mixing_weight(np.array([-50.0, 50.0])) == pytest.approx([0.20, 0.75])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="stride"):
        sliding_plan(1, 10, 8, 16)
    with pytest.raises(ValueError, match="vocabulary"):
        run_scorer(NgramScorer(V), np.array([1, 2, V]), 2)
    with pytest.raises(RuntimeError, match="begin"):
        NgramScorer(V).score_chunk(np.array([1, 2]))
    with pytest.raises(ValueError, match="logits_fn returned shape"):
        run_scorer(ModelScorer(lambda x: torch.zeros(1, 1, V), 8, 8, V), np.arange(10) % V, 5)
