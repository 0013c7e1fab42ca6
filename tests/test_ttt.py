"""Score-first LoRA TTT: LoRA starts as the identity, lr = 0 is ModelScorer exactly, the audit passes
ours and catches an adapt-before-scoring variant, learning lowers the loss of repeated text, and two
gloo ranks give one process's scores and adapters."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lila_golf.tools.audit import run_audit
from lila_golf.core.model import GPT, GPTConfig
from lila_golf.core.scoring import MixtureScorer, ModelScorer, NgramScorer, run_scorer
from lila_golf.core.ttt import TTTScorer, apply_lora, remove_lora

V, SEQ_LEN, STRIDE = 256, 32, 16
TESTS_DIR = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2))
    with torch.no_grad():  # untrained weights give near-uniform logits: spread them out
        model.tok_emb.weight.normal_(0, 0.3)
        for p in model.parameters():
            if p.ndim == 2 and p is not model.tok_emb.weight:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def stream(n=1201, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=n)


def ttt(model, **kw):
    return TTTScorer(model, SEQ_LEN, STRIDE, **{"lr": 1e-2, "epochs": 2, "chunk_tokens": 200, "lora_rank": 4, **kw})


def test_lora_with_zero_b_is_the_identity_and_leaves_base_weights_alone():
    model = tiny_model()
    x = torch.from_numpy(stream(2 * SEQ_LEN)).view(2, SEQ_LEN)
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = apply_lora(model, 4, ("attn.c_q", "attn.c_v", "mlp.fc"), generator=torch.Generator().manual_seed(0))
    assert len(params) == 2 * 3 * 2  # (A, B) x 3 targets x 2 layers
    assert torch.equal(model(x), before)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, 4)
    with torch.no_grad():
        params[1].add_(0.1)  # B of the first adapted layer
    assert not torch.allclose(model(x), before)
    assert set(model.state_dict()) == set(state) and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert remove_lora(model) == 6 and torch.equal(model(x), before)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        apply_lora(model, 4, ("attn.c_nope",))


def test_lr_zero_equals_model_scorer_exactly():
    model, tokens = tiny_model(), stream()
    probe = [5, 333, 1100]
    ref, ref_d = run_scorer(ModelScorer(model, SEQ_LEN, STRIDE, V), tokens, 200, probe)
    got, got_d = run_scorer(ttt(model, lr=0.0), tokens, 200, probe)
    assert np.array_equal(got, ref) and np.array_equal(got_d, ref_d)


def test_scores_do_not_depend_on_the_drivers_chunk_size():
    model, tokens = tiny_model(), stream()
    a, _ = run_scorer(ttt(model), tokens, 200)
    b, _ = run_scorer(ttt(model), tokens, 77)  # TTT chunks stay on their grid of 200 targets
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_audit_passes_score_first_ttt_and_adaptation_really_happens():
    model, tokens = tiny_model(), stream(1001)
    base, _ = run_scorer(ModelScorer(model, SEQ_LEN, STRIDE, V), tokens, 200)
    adapted, _ = run_scorer(ttt(model), tokens, 200)
    assert np.array_equal(adapted[:200], base[:200])  # the first chunk is scored before any training
    assert np.abs(adapted[200:] - base[200:]).max() > 1e-3  # later chunks by the adapted model
    results = run_audit(lambda: ttt(model), tokens, n_probe=6, n_check=2, chunk_size=200)
    assert all(r.passed for r in results), [r.line() for r in results]


class AdaptFirstTTT(TTTScorer):
    """Invalid on purpose: trains on each chunk BEFORE scoring it, so x_t helps predict x_t."""

    def score_chunk_with_entropy(self, chunk, probe=()):
        a = self.offset + len(self.tokens)
        self.tokens = torch.cat([self.tokens, torch.as_tensor(np.asarray(chunk, dtype=np.int64))])
        self._ttt_adapt(a, a + len(chunk))
        self.tokens = self.tokens[:len(self.tokens) - len(chunk)]
        return super().score_chunk_with_entropy(chunk, probe)


def test_audit_catches_adapting_before_scoring():
    model, tokens = tiny_model(), stream(1001)
    results = run_audit(lambda: AdaptFirstTTT(model, SEQ_LEN, STRIDE, lr=1e-2, epochs=2, chunk_tokens=10**9),
                        tokens, n_probe=4, n_check=2, chunk_size=200)
    verdict = {r.condition: r.passed for r in results}
    assert not verdict["C3"] and verdict["C2"], [r.line() for r in results]


def test_adaptation_on_repeated_text_lowers_the_loss_of_the_next_repeat():
    model = tiny_model()
    text = stream(200, seed=3)
    tokens = np.concatenate([[0], text, text, text])  # targets 1..200, 201..400, 401..600: three repeats
    base, _ = run_scorer(ModelScorer(model, SEQ_LEN, STRIDE, V), tokens, 200)
    adapted, _ = run_scorer(ttt(model, lr=3e-2, epochs=4), tokens, 200)
    np.testing.assert_array_equal(adapted[:200], base[:200])
    base_nll, ttt_nll = -base.reshape(3, 200).mean(1), -adapted.reshape(3, 200).mean(1)
    assert ttt_nll[1] < base_nll[1] - 0.1 and ttt_nll[2] < ttt_nll[1], (base_nll, ttt_nll)


def test_mixture_over_ttt_is_a_valid_scorer():
    model, tokens = tiny_model(), stream(801)
    make = lambda: MixtureScorer(ttt(model), NgramScorer(V, max_order=4))
    results = run_audit(make, tokens, n_probe=4, n_check=1, chunk_size=200)
    assert all(r.passed for r in results), [r.line() for r in results]


def test_bad_settings_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="stride"):
        TTTScorer(model, SEQ_LEN, SEQ_LEN + 1)
    with pytest.raises(ValueError, match="chunk_tokens"):
        TTTScorer(model, SEQ_LEN, STRIDE, chunk_tokens=0)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        TTTScorer(model, SEQ_LEN, STRIDE, targets=("nope",))
    with pytest.raises(RuntimeError, match="before begin"):
        TTTScorer(model, SEQ_LEN, STRIDE).score_chunk([1, 2])


# ---------------------------------------------------------------- two ranks (gloo, CPU)

DIST_PROBE = [7, 450, 999]


def dist_run():
    """(logp, dists, adapters) of one TTT pass; the same call in every process."""
    scorer = ttt(tiny_model(), chunk_tokens=300)
    logp, dists = run_scorer(scorer, stream(1001), 250, DIST_PROBE)
    return logp, dists, [p.detach().numpy() for p in scorer.lora_params]


def dist_worker(out_path: str) -> None:
    """Body of each rank's process (RANK/WORLD_SIZE/MASTER_* in the environment)."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    logp, dists, adapters = dist_run()
    np.savez(out_path, logp=logp, dists=dists, **{f"a{i}": a for i, a in enumerate(adapters)})
    dist.barrier()  # no rank leaves gloo while its peer still talks (teardown abort)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path):
    ref_logp, ref_dists, ref_adapters = dist_run()
    port, procs = str(_free_port()), []
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_ttt; test_ttt.dist_worker(sys.argv[1])"
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"r{rank}.npz")], env=env,
                                      cwd=TESTS_DIR.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    ranks = [np.load(tmp_path / f"r{r}.npz", allow_pickle=False) for r in range(2)]
    for res in ranks:
        np.testing.assert_allclose(res["logp"], ref_logp, rtol=0, atol=1e-5)
        np.testing.assert_allclose(res["dists"], ref_dists, rtol=0, atol=1e-6)
        for i, ref in enumerate(ref_adapters):
            np.testing.assert_allclose(res[f"a{i}"], ref, rtol=0, atol=1e-5)
    for i in range(len(ref_adapters)):  # every rank holds the very same adapters
        assert np.array_equal(ranks[0][f"a{i}"], ranks[1][f"a{i}"])


def test_hand_written_adam_matches_torch_adam():
    from lila_golf.core.ttt import _ttt_adam_step
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ours]
    opt = torch.optim.Adam(theirs, lr=0.01)
    for step in range(1, 6):
        grads = [torch.randn(p.shape, generator=gen) for p in ours]
        _ttt_adam_step(ours, grads, state, 0.01, step)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)
