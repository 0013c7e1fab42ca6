"""Tests for lila_golf.core.optim: Newton-Schulz, Muon (weight decay, distributed), groups, schedules, EMA/SWA."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lila_golf.core.optim import (
    EMA, SWA, Muon, OptimGroupError, build_optimizers, lr_scale, muon_momentum_at,
    split_param_groups, zeropower_newton_schulz,
)

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


# ---------------------------------------------------------------- Newton-Schulz

@pytest.mark.parametrize("shape", [(512, 1536), (1536, 512)])
def test_newton_schulz_is_near_orthogonal(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x = zeropower_newton_schulz(g, steps=5)
    assert x.shape == g.shape and x.dtype == torch.float32
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    polar = u @ vh  # exact U V^T
    sv = torch.linalg.svdvals(x.double())
    assert 0.6 <= sv.min().item() and sv.max().item() <= 1.3, (sv.min(), sv.max())
    cos = (x.double() * polar).sum() / (x.double().norm() * polar.norm())
    assert cos.item() >= 0.95


def test_newton_schulz_rejects_non_matrix():
    with pytest.raises(ValueError, match="2-D"):
        zeropower_newton_schulz(torch.ones(3, 4, 5))


# ---------------------------------------------------------------- Muon

def test_muon_weight_decay_with_zero_grad_is_exact_shrink():
    w0 = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    p = nn.Parameter(w0.clone())
    lr, wd = 0.05, 0.2
    opt = Muon([p], lr=lr, momentum=0.95, weight_decay=wd)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p.detach(), w0 * (1 - lr * wd))


def test_muon_matches_hand_computed_nesterov_step():
    gen = torch.Generator().manual_seed(2)
    w0, g0, g1 = (torch.randn(96, 48, generator=gen) for _ in range(3))
    p = nn.Parameter(w0.clone())
    lr, mu = 0.03, 0.9
    opt = Muon([p], lr=lr, momentum=mu, nesterov=True)
    expected = w0.clone()
    buf = torch.zeros_like(w0)
    for g in (g0, g1):
        p.grad = g.clone()
        opt.step()
        buf = mu * buf + g
        # tall matrix (96 x 48): update scaled by sqrt(96 / 48)
        expected -= lr * zeropower_newton_schulz(g + mu * buf) * 2 ** 0.5
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="2-D"):
        Muon([nn.Parameter(torch.ones(5))], lr=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_muon_two_gloo_ranks_match_one_process(tmp_path):
    sys.path.insert(0, str(TESTS_DIR))
    try:
        import _muon_dist_worker as worker
    finally:
        sys.path.remove(str(TESTS_DIR))
    reference, ref_calls = worker.run_muon_steps()
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, str(TESTS_DIR / "_muon_dist_worker.py"), str(tmp_path / f"r{rank}.npz")]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    calls = []
    for rank in range(2):
        result = np.load(tmp_path / f"r{rank}.npz", allow_pickle=False)
        calls.append(int(result["ns_calls"]))
        for i, ref in enumerate(reference):
            np.testing.assert_allclose(result[f"p{i}"], ref, rtol=0, atol=1e-6)
    # The orthogonalisation really was split: 5 matrices round-robin -> 3 + 2 per step.
    assert calls == [3 * worker.STEPS, 2 * worker.STEPS] and ref_calls == 5 * worker.STEPS


# ---------------------------------------------------------------- parameter groups

class _TinyBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.fc = nn.Linear(dim, 2 * dim, bias=True)
        self.proj = nn.Linear(2 * dim, dim, bias=False)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.resid_mix = nn.Parameter(torch.ones(2, dim))  # 2-D control tensor, by name -> Adam


class _TinyGPT(nn.Module):
    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, dim)
        self.bigram = nn.Embedding(64, dim)
        self.blocks = nn.ModuleList([_TinyBlock(dim), _TinyBlock(dim)])
        self.smear_gate = nn.Parameter(torch.zeros(dim))
        self.logit_gain = nn.Parameter(torch.tensor(1.0))  # 0-D
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)


def test_every_parameter_in_exactly_one_group():
    model = _TinyGPT()
    groups = split_param_groups(model)
    placed = [p for key in groups for _, p in groups[key]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(placed) == len({id(p) for p in placed}) == len(trainable)
    assert {id(p) for p in placed} == trainable
    names = {key: {n for n, _ in groups[key]} for key in groups}
    assert names["embed"] == {"tok_emb.weight", "bigram.weight"}
    assert names["matrix"] == {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("fc", "proj")}
    assert "blocks.0.resid_mix" in names["scalar"] and "logit_gain" in names["scalar"]
    assert "blocks.1.fc.bias" in names["scalar"] and "blocks.1.norm.weight" in names["scalar"]


def test_optim_group_attribute_moves_a_matrix_out_of_muon():
    model = _TinyGPT()
    model.blocks[0].proj.weight._optim_group = "scalar"
    groups = split_param_groups(model)
    assert "blocks.0.proj.weight" in {n for n, _ in groups["scalar"]}
    assert "blocks.0.proj.weight" not in {n for n, _ in groups["matrix"]}


@pytest.mark.parametrize("bad", ["raw2d", "conv", "bad_label"])
def test_unplaceable_parameter_raises(bad):
    model = _TinyGPT()
    if bad == "raw2d":
        model.mystery = nn.Parameter(torch.ones(4, 4))
    elif bad == "conv":
        model.conv = nn.Conv1d(4, 4, 3)
    else:
        model.blocks[0].fc.weight._optim_group = "muon"
    with pytest.raises(OptimGroupError):
        split_param_groups(model)


def test_build_optimizers_groups_and_base_lr():
    model = _TinyGPT()
    muon, adam = build_optimizers(
        model, matrix_lr=0.04, embed_lr=0.6, scalar_lr=0.02, muon_momentum=0.95,
        muon_backend_steps=5, muon_weight_decay=0.01, adam_weight_decay=0.1, beta1=0.9,
        beta2=0.95, adam_eps=1e-8)
    assert isinstance(muon, Muon) and isinstance(adam, torch.optim.AdamW)
    assert muon.param_groups[0]["base_lr"] == 0.04
    assert [(g["group_name"], g["base_lr"], g["weight_decay"]) for g in adam.param_groups] == [
        ("embed", 0.6, 0.1), ("scalar", 0.02, 0.0)]
    in_optims = [p for opt in (muon, adam) for g in opt.param_groups for p in g["params"]]
    assert len(in_optims) == len({id(p) for p in in_optims}) == sum(
        1 for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- schedules

def _lr(step, elapsed_ms=0.0, cap=None):
    return lr_scale(step, elapsed_ms, warmup_steps=4, warmdown_steps=10, iterations=100,
                    max_wallclock_ms=cap)


def test_lr_scale_warmup_and_step_warmdown():
    assert [_lr(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert _lr(89) == 1.0
    assert [_lr(s) for s in (90, 95, 99, 100)] == [1.0, 0.5, 0.1, 0.0]


def test_lr_scale_wallclock_warmdown():
    # 50 steps in 5,000 ms -> 100 ms/step -> warmdown 1,000 ms of a 6,000 ms budget.
    assert _lr(50, 5000.0, cap=6000.0) == 1.0
    assert _lr(50, 5000.0, cap=5500.0) == pytest.approx(0.5)
    assert _lr(50, 5000.0, cap=5000.0) == 0.0
    assert _lr(50, 5000.0, cap=4000.0) == 0.0  # over the cap
    assert _lr(0, 0.0, cap=6000.0) == 0.25  # warmup still applies; no step time yet
    assert _lr(95, 100.0, cap=1e9) == 0.5  # the step count ends first


def test_lr_scale_no_warmup_no_warmdown():
    assert lr_scale(0, 0.0, warmup_steps=0, warmdown_steps=0, iterations=10,
                    max_wallclock_ms=None) == 1.0


def test_muon_momentum_warmup():
    values = [muon_momentum_at(s, start=0.85, end=0.95, warmup_steps=10) for s in (0, 5, 10, 50)]
    assert values == pytest.approx([0.85, 0.90, 0.95, 0.95])
    assert muon_momentum_at(0, start=0.85, end=0.95, warmup_steps=0) == 0.95


# ---------------------------------------------------------------- EMA / SWA

def _set_weights(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_matches_hand_computation():
    model = nn.Linear(3, 2)
    _set_weights(model, 1.0)
    ema = EMA(model, decay=0.9)
    for value in (2.0, 4.0):
        _set_weights(model, value)
        ema.update(model)
    # 0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4 = 0.99 + 0.4 = 1.39
    target = nn.Linear(3, 2)
    ema.copy_to(target)
    for p in target.parameters():
        torch.testing.assert_close(p.detach(), torch.full_like(p, 1.39), rtol=0, atol=1e-6)
    restored = EMA(nn.Linear(3, 2), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(restored.shadow[k], ema.shadow[k]) for k in ema.shadow)
    with pytest.raises(ValueError, match="keys differ"):
        EMA(nn.Linear(3, 2, bias=False), decay=0.9).load_state_dict(ema.state_dict())


def test_swa_is_uniform_mean_of_snapshots():
    model = nn.Linear(3, 2)
    swa = SWA(model)
    with pytest.raises(ValueError, match="no snapshot"):
        swa.copy_to(model)
    for value in (1.0, 2.0, 6.0):
        _set_weights(model, value)
        swa.add(model)
    restored = SWA(nn.Linear(3, 2))
    restored.load_state_dict(swa.state_dict())
    target = nn.Linear(3, 2)
    restored.copy_to(target)
    for p in target.parameters():
        assert torch.equal(p.detach(), torch.full_like(p, 3.0))
