"""The per-token online n-gram equals BackoffNgram fed one token at a time (bit for bit), splits by
vocabulary part exactly, and its features never see the target; the learned mixer only uses scored
chunks, and the audit passes the mixture and catches a mixer that peeks at the target."""
import numpy as np
import pytest
import torch

from lila_golf.core.ngram import BackoffNgram
from lila_golf.core.ngrammix import (MixerConfig, NgramArrays, NgramMixScorer, learned_mixture, mixer_chunks,
                                     online_ngram)
from lila_golf.core.scoring import ModelScorer, run_scorer
from lila_golf.tools.audit import run_audit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def repetitive_stream(n=1500, vocab=40, seed=0):
    """Random tokens with repeated phrases, so that long contexts recur."""
    rng = np.random.default_rng(seed)
    phrase = rng.integers(0, vocab, size=60)
    parts = [rng.integers(0, vocab, size=100)]
    while sum(map(len, parts)) < n:
        parts += [phrase[:rng.integers(5, 60)], rng.integers(0, vocab, size=rng.integers(5, 80))]
    return np.concatenate(parts)[:n]


def token_by_token(tokens, vocab, order, discount, beta):
    """Reference: BackoffNgram scoring one target, then counting it, then the next."""
    lm, out = BackoffNgram(vocab, order, discount, beta), []
    for t in range(1, len(tokens)):
        out.append(lm.logprob(tokens[:t + 1], t)[0])
        lm.update(tokens[:t + 1], t)
    return np.array(out)


@pytest.mark.parametrize("order,discount,beta", [(1, 0.5, 3.0), (3, 0.75, 0.0), (6, 0.5, 3.0), (9, 1.0, 0.5)])
def test_online_ngram_equals_backoff_ngram_fed_token_by_token(order, discount, beta):
    tokens = repetitive_stream(700)
    got = online_ngram(tokens, 40, order, discount, beta)
    assert np.array_equal(got.logp, token_by_token(tokens, 40, order, discount, beta))


def test_vocabulary_parts_give_the_whole_exactly():
    tokens = repetitive_stream(3000, vocab=60, seed=1)
    whole = online_ngram(tokens, 60, 7)
    own = np.random.default_rng(2).random(60) < 0.4
    a, b = online_ngram(tokens, 60, 7, own_tokens=own), online_ngram(tokens, 60, 7, own_tokens=~own)
    for name in ("logp", "order", "ctx_count", "distinct"):
        assert np.array_equal(getattr(a, name) + getattr(b, name), getattr(whole, name)), name


def test_features_and_scores_use_the_prefix_only():
    tokens = repetitive_stream(1200, seed=3)
    base = online_ngram(tokens, 40, 6)
    for t in (300, 777, 1100):
        changed = tokens.copy()
        changed[t] = (changed[t] + 1) % 40  # the target itself: its features stay, its score may not
        changed[t + 1:] = np.random.default_rng(t).integers(0, 40, size=len(tokens) - t - 1)
        ng = online_ngram(changed, 40, 6)
        assert np.array_equal(ng.logp[:t - 1], base.logp[:t - 1])
        for name in ("order", "ctx_count", "distinct"):
            assert np.array_equal(getattr(ng, name)[:t], getattr(base, name)[:t]), name


def test_learned_mixture_scores_each_chunk_before_learning_from_it():
    rng = np.random.default_rng(4)
    n = 5000
    ng = NgramArrays(np.log(rng.uniform(0.01, 1, n)), rng.integers(0, 5, n).astype(np.int8),
                     rng.integers(0, 9, n).astype(float), rng.integers(0, 5, n).astype(float))
    model_logp, entropy = np.log(rng.uniform(0.01, 1, n)), rng.uniform(0, 6, n)
    cfg = MixerConfig(max_order=4, min_chunk=64)
    full, _ = learned_mixture(model_logp, entropy, ng, cfg)
    bounds = mixer_chunks(n, 64)
    assert bounds[0] == 0 and bounds[-1] == n and bounds[1] == 64
    for cut in (100, 1000, 3000):  # the prefix alone gives the same numbers up to the cut
        part = NgramArrays(*(a[:cut] for a in (ng.logp, ng.order, ng.ctx_count, ng.distinct)))
        head, _ = learned_mixture(model_logp[:cut], entropy[:cut], part, cfg)
        assert np.array_equal(head, full[:cut])
    first = bounds[1]  # the first chunk is scored with the initial weight for every target
    a0 = 1 / (1 + np.exp(-cfg.init_bias))
    np.testing.assert_allclose(full[:first], np.log((1 - a0) * np.exp(model_logp[:first]) + a0 * np.exp(ng.logp[:first])))


def test_mixer_learns_to_trust_a_good_ngram_and_to_ignore_a_bad_one():
    rng = np.random.default_rng(5)
    n = 20000
    model_logp, entropy = np.full(n, np.log(0.1)), np.full(n, 3.0)
    good = NgramArrays(np.full(n, np.log(0.6)), np.full(n, 3, np.int8), np.full(n, 5.0), np.ones(n))
    bad = NgramArrays(np.full(n, np.log(0.001)), np.full(n, 3, np.int8), np.full(n, 5.0), np.ones(n))
    cfg = MixerConfig(max_order=4)
    w_good, w_bad = np.empty(n), np.empty(n)
    learned_mixture(model_logp, entropy, good, cfg, w_good)
    mixed_bad, _ = learned_mixture(model_logp, entropy, bad, cfg, w_bad)
    assert w_good[-1000:].min() > 0.95 and w_bad[-1000:].max() < 0.01
    assert -mixed_bad.sum() < -model_logp.sum() + 80.0  # the price of learning: < 80 nats in all (~54 measured)


def tiny_lm(vocab=40, seed=0):
    from lila_golf.core.model import GPT, GPTConfig
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2))
    return model.eval()


def mix_scorer(model, cls=NgramMixScorer):
    return cls(ModelScorer(lambda x: model(x), 16, 8, model.cfg.vocab_size), max_order=5,
               mixer=MixerConfig(max_order=5, min_chunk=32))


def test_streaming_mixture_equals_the_arrays_and_passes_the_audit():
    model = tiny_lm()
    tokens = repetitive_stream(900, seed=6)
    logp, _ = run_scorer(mix_scorer(model), tokens, 200)
    model_lp, _ = run_scorer(ModelScorer(lambda x: model(x), 16, 8, 40), tokens, 200)
    ms = ModelScorer(lambda x: model(x), 16, 8, 40)
    ms.begin(int(tokens[0]))
    _, _, entropy = ms.score_chunk_with_entropy(tokens[1:])
    want, _ = learned_mixture(model_lp, entropy, online_ngram(tokens, 40, 5, 0.75, 0.0), MixerConfig(max_order=5, min_chunk=32))
    np.testing.assert_allclose(logp, want, rtol=0, atol=1e-9)
    results = run_audit(lambda: mix_scorer(model), tokens, chunk_size=128, n_probe=6, n_check=3)
    assert all(r.passed for r in results), [r.line() for r in results]


class PeekingMixScorer(NgramMixScorer):
    """Invalid: the mixing weight of each target comes from whether the n-gram beats the model on
    that very target (so it looks at x_t)."""

    def score_chunk(self, chunk, probe=()):
        probe = np.asarray(probe, dtype=np.int64).reshape(-1)
        lp_model, d_model, _ = self.model.score_chunk_with_entropy(chunk, probe)
        a = len(self.tokens)
        self.tokens = np.concatenate([self.tokens, chunk])
        lp_ng = online_ngram(self.tokens, self.vocab_size, self.max_order, self.discount, self.beta).logp[a - 1:]
        w = np.where(lp_ng > lp_model, 0.9, 0.1)
        mixed = np.logaddexp(np.log1p(-w) + lp_model, np.log(w) + lp_ng)
        d_ng = np.full((len(probe), self.vocab_size), 1.0 / self.vocab_size)
        return mixed, (1 - w[probe, None]) * d_model + w[probe, None] * d_ng


def test_the_audit_catches_a_mixer_that_peeks_at_the_target():
    model = tiny_lm()
    tokens = repetitive_stream(700, seed=7)
    results = {r.condition: r for r in run_audit(lambda: mix_scorer(model, PeekingMixScorer), tokens,
                                                  chunk_size=128, n_probe=6, n_check=3)}
    assert not (results["C2"].passed and results["C3"].passed)


def test_learned_mixture_is_the_logistic_weight_over_the_documented_features():
    """The fast path (gathers, bincount) against the definition: z = w . mixer_features, Adam on the
    chunk's mean loss."""
    from lila_golf.core.ngrammix import _mix_logp, _mixer_adam, mixer_features
    rng = np.random.default_rng(8)
    n, K = 3000, 5
    ng = NgramArrays(np.log(rng.uniform(0.01, 1, n)), rng.integers(0, K + 1, n).astype(np.int8),
                     rng.integers(0, 9, n).astype(float), rng.integers(0, 5, n).astype(float))
    model_logp, entropy = np.log(rng.uniform(0.01, 1, n)), rng.uniform(0, 6, n)
    cfg = MixerConfig(max_order=K, min_chunk=100)
    got, _ = learned_mixture(model_logp, entropy, ng, cfg)
    w, state, want = np.zeros(K + 5), (np.zeros(K + 5), np.zeros(K + 5)), np.empty(n)
    w[0] = cfg.init_bias
    bounds = mixer_chunks(n, cfg.min_chunk)
    for step, (i0, i1) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        f = mixer_features(entropy, ng, i0, i1, K)
        mixed, log_a, log_1a = _mix_logp(f @ w, model_logp[i0:i1], ng.logp[i0:i1])
        want[i0:i1] = mixed
        g = np.exp(log_a + log_1a + model_logp[i0:i1] - mixed) - np.exp(log_a + log_1a + ng.logp[i0:i1] - mixed)
        _mixer_adam(w, f.T @ g / (i1 - i0), state, cfg.lr, step)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
