"""The CUDA paths proven on the CPU: torch.compile(fullgraph=True) of the record architecture with
every switch the record preset uses (inductor on CPU), bf16 autocast, Newton-Schulz in bf16.
What truly needs CUDA (NCCL, the fused Adam, flash kernels) is in tests/test_cuda.py, skipped here."""
import contextlib

import pytest
import torch

from lila_golf.core.config import PRESETS, GPTConfig, Hyperparameters
from lila_golf.core.model import GPT
from lila_golf.core.optim import build_optimizers, zeropower_newton_schulz
from lila_golf.core.train import optimizer_kwargs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def record_architecture_small() -> GPTConfig:
    """The record preset's switches at reduced width (head_dim 8, so partial RoPE on 4 of its dims)."""
    fields = set(GPTConfig.__dataclass_fields__)
    cfg = {k: v for k, v in PRESETS["record"].items() if k in fields}
    cfg.update(num_layers=3, model_dim=64, num_heads=8, num_kv_heads=4, rope_dims=4, bigram_hash_buckets=64,
               bigram_dim=16, xsa_last_n=min(cfg.get("xsa_last_n", 0), 3))
    if cfg.get("parallel_start"):  # the record's loop, then its lanes, scaled to 3 layers
        cfg.update(parallel_start=2)
    if cfg.get("num_loops"):
        cfg.update(loop_start=1, loop_end=1, num_loops=1)
    return GPTConfig(**cfg)


def batches(n: int, vocab: int = 1024):
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocab, (4, 33), generator=gen) for _ in range(n)]


def train_losses(model, owner, data, steps_before_freeze: int = 0, autocast=None) -> list[float]:
    """Steps of the record preset's optimisers; `owner` is the GPT whose parameters they update.
    autocast: a context factory entered around each forward only, as train.py does. One autocast
    region around the whole loop would be wrong in eager mode: autocast caches its bf16 copies of the
    weights until the region ends, so later forwards would not see the optimiser's updates."""
    opts = build_optimizers(owner, **optimizer_kwargs(Hyperparameters.from_env({"PRESET": "record"}), torch.device("cpu")))
    losses = []
    for i, seq in enumerate(data):
        if i == steps_before_freeze and steps_before_freeze:
            torch._dynamo.config.error_on_recompile = True  # warm-up is over: any recompile fails
        with autocast() if autocast else contextlib.nullcontext():
            loss = model(seq[:, :-1], seq[:, 1:])
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def small_gpt(device: str = "cpu") -> GPT:
    torch.manual_seed(0)
    return GPT(record_architecture_small()).to(device)


def eager_losses(device: str = "cpu", autocast=None) -> list[float]:
    model = small_gpt(device)
    return train_losses(model, model, [b.to(device) for b in batches(4)], autocast=autocast)


def compiled_and_eager_losses(device: str = "cpu", autocast=None) -> tuple[list[float], list[float]]:
    """Four optimiser steps of the small record architecture, compiled (fullgraph, no recompile after
    two steps) and eager from the same weights: (compiled losses, eager losses)."""
    eager = small_gpt(device)
    twin = GPT(record_architecture_small()).to(device)
    twin.load_state_dict(eager.state_dict())
    data = [b.to(device) for b in batches(4)]
    torch._dynamo.reset()
    compiled = torch.compile(twin, dynamic=False, fullgraph=True)  # fullgraph: a graph break raises
    try:
        got = train_losses(compiled, twin, data, steps_before_freeze=2, autocast=autocast)
    finally:
        torch._dynamo.config.error_on_recompile = False
    return got, train_losses(eager, eager, data, autocast=autocast)


def test_record_architecture_compiles_fullgraph_and_trains_like_eager():
    got, want = compiled_and_eager_losses()
    assert max(abs(a - b) for a, b in zip(got, want)) < 2e-3, (got, want)
    assert len(set(want)) == len(want)  # the weights moved at every step


def test_compiled_bf16_training_matches_eager_bf16_and_fp32():
    # the loss after the first update rises by ~0.15 at this lr; bf16 rounding moves it by < 0.01
    got, want = compiled_and_eager_losses(autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    fp32 = eager_losses()
    assert max(abs(a - b) for a, b in zip(got, want)) < 0.02, (got, want)
    assert max(abs(a - b) for a, b in zip(want, fp32)) < 0.02, (want, fp32)


def test_bf16_autocast_forward_backward_close_to_fp32():
    torch.manual_seed(0)
    model = GPT(record_architecture_small())
    seq = batches(1)[0]
    loss32 = model(seq[:, :-1], seq[:, 1:])
    loss32.backward()
    g32 = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = model(seq[:, :-1], seq[:, 1:])
    loss16.backward()
    assert abs(float(loss16) - float(loss32)) < 0.02
    for n, p in model.named_parameters():
        if n in g32 and g32[n].norm() > 1e-6:
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), g32[n].flatten(), dim=0)
            assert cos > 0.97, (n, float(cos))


def test_newton_schulz_in_bf16_as_on_gpu():
    g = torch.randn(128, 384, generator=torch.Generator().manual_seed(3))
    x32 = zeropower_newton_schulz(g, steps=5)
    x16 = zeropower_newton_schulz(g, steps=5, dtype=torch.bfloat16)
    assert x16.dtype == g.dtype
    s = torch.linalg.svdvals(x16)
    assert 0.6 < float(s.min()) and float(s.max()) < 1.25
    assert torch.nn.functional.cosine_similarity(x16.flatten(), x32.flatten(), dim=0) > 0.99
