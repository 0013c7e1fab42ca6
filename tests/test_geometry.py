"""E8 and Leech geometry in the model: the formulas, the no-op of the seed's Leech form, causality,
parameter counts, and that the plain model is untouched when every switch is off."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lila_golf.core.config import Hyperparameters, validate_geometry
from lila_golf.core.geometry import (E8_BIAS_INIT, E8Adapter, E8AttentionBias, e8_quantize, e8_roots_tensor, leech_block_apply, leech_reduced_basis)
from lila_golf.core.lattice import e8_nearest_root, e8_roots, leech_basis
from lila_golf.core.model import GPT, GPTConfig, count_params
from lila_golf.core.optim import build_optimizers

BASE = dict(vocab_size=64, num_layers=2, model_dim=48, num_heads=2, num_kv_heads=1, mlp_mult=2)


def build(seed=0, dtype=torch.float32, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **overrides})).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # zero-initialised projections would hide branches at init
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32).to(dtype))
    return model.eval()


def tokens(seed=0, B=2, T=12):
    return torch.randint(0, BASE["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def seed_kernel() -> torch.Tensor:
    """The LILA seed's "Leech kernel": the orthogonal QR factor of a shift matrix (24 x 24)."""
    shift = torch.eye(24, dtype=torch.float64) + torch.roll(torch.eye(24, dtype=torch.float64), 1, dims=1)
    return torch.linalg.qr(shift).Q


# --- configuration errors -------------------------------------------------------------------------

@pytest.mark.parametrize("geometry,dim,heads", [("e8", 48, 4), ("leech_frozen", 128, 4), ("leech_metric", 64, 2)])
def test_head_dim_errors_name_head_dim(geometry, dim, heads):
    with pytest.raises(ValueError, match="head_dim"):
        validate_geometry(geometry, dim, heads)
    with pytest.raises(ValueError, match="head_dim"):
        Hyperparameters.from_env({"PRESET": "test", "ATTN_GEOMETRY": geometry, "MODEL_DIM": str(dim),
                                  "NUM_HEADS": str(heads), "NUM_KV_HEADS": "1"})
    with pytest.raises(ValueError, match="head_dim"):
        GPT(GPTConfig(**{**BASE, "model_dim": dim, "num_heads": heads, "attn_geometry": geometry}))


def test_other_config_errors():
    with pytest.raises(ValueError, match="ATTN_GEOMETRY"):
        validate_geometry("leech", 48, 2)
    with pytest.raises(ValueError, match="E8_SIDEBRANCH"):
        validate_geometry("none", 48, 2, e8_sidebranch="hard")
    with pytest.raises(ValueError, match="E8_TEMPERATURE > 0"):
        validate_geometry("none", 48, 2, e8_sidebranch="soft", e8_temperature=0.0)
    hp = Hyperparameters.from_env({"PRESET": "test", "ATTN_GEOMETRY": "e8", "E8_SIDEBRANCH": "soft",
                                   "E8_TEMPERATURE": "0.3", "E8_ADAPTER": "1"})
    cfg = GPTConfig.from_hparams(hp)
    assert (cfg.attn_geometry, cfg.e8_sidebranch, cfg.e8_temperature, cfg.e8_adapter) == ("e8", "soft", 0.3, True)


# --- E8 -------------------------------------------------------------------------------------------

def test_e8_bias_matches_the_formula():
    """bias_h(t, s) = gamma_h / (2n) sum_b p(q_tb)^T R R^T p(k_sb), p = softmax(cos / tau), by loops."""
    g = torch.Generator().manual_seed(0)
    B, T, H, K, hd, tau = 1, 5, 4, 2, 16, 0.3
    q, k = torch.randn(B, T, H, hd, generator=g), torch.randn(B, T, K, hd, generator=g)
    module = E8AttentionBias(H, hd, tau)
    with torch.no_grad():
        module.e8_bias_gain.copy_(torch.tensor([0.1, -0.2, 0.3, 0.7]))
        got = module(q, k).double().numpy()
    R = e8_roots()

    def assign(u):
        cos = R @ u / (np.linalg.norm(u) * np.sqrt(2))
        e = np.exp(cos / tau - (cos / tau).max())
        return e / e.sum()

    qn, kn = q.double().numpy(), k.double().numpy()
    for h in range(H):
        for t in range(T):
            for s in range(T):
                if s > t:
                    assert got[0, h, t, s] == -np.inf
                    continue
                terms = [assign(qn[0, t, h, b:b + 8]) @ R @ R.T @ assign(kn[0, s, h // (H // K), b:b + 8])
                         for b in range(0, hd, 8)]
                want = module.e8_bias_gain[h].item() / (2 * len(terms)) * sum(terms)
                assert abs(got[0, h, t, s] - want) < 1e-5


def test_e8_attention_adds_exactly_the_bias_to_the_logits():
    """The model's extra-channel form equals SDPA on the plain logits with the bias as a float mask."""
    attn = build(attn_geometry="e8", num_kv_heads=1).blocks[0].attn
    x = torch.randn(2, 9, 48, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        got, _ = attn(x)
        q = F.rms_norm(attn.c_q(x).view(2, 9, 2, 24), (24,))
        k = F.rms_norm(attn.c_k(x).view(2, 9, 1, 24), (24,))
        v = attn.c_v(x).view(2, 9, 1, 24)
        mask = attn.e8_bias(q, k)                                              # (B, H, T, T)
        q = attn.rotary(q) * attn.q_gain[None, None, :, None]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), attn.rotary(k).transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask, enable_gqa=True).transpose(1, 2)
        want = attn.proj(y.reshape(2, 9, 48))
        without = F.scaled_dot_product_attention(q.transpose(1, 2), attn.rotary(k).transpose(1, 2),
                                                 v.transpose(1, 2), is_causal=True, enable_gqa=True)
    assert torch.allclose(got, want, atol=1e-5)
    assert (attn.proj(without.transpose(1, 2).reshape(2, 9, 48)) - want).abs().max() > 1e-3


def test_e8_bias_at_temperature_zero_is_the_root_angle_class():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 30, 1, 8, generator=g), torch.randn(2, 30, 1, 8, generator=g)
    bias = E8AttentionBias(1, 8, 0.0)(q, k).detach()
    finite = bias[torch.isfinite(bias)] / E8_BIAS_INIT  # <r, r'> / 2 in {-1, -1/2, 0, 1/2, 1}
    assert torch.allclose(finite * 2, (finite * 2).round(), atol=1e-6)
    assert finite.abs().max() <= 1 + 1e-6 and len(set((finite * 2).round().tolist())) >= 3


def test_e8_quantizer_hard_form_is_the_nearest_root_at_the_input_norm():
    u = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    qz = e8_quantize(u, e8_roots_tensor(), 0.0, "st").detach()
    blocks, qb = u.view(50, 2, 8), qz.view(50, 2, 8)
    roots = e8_roots_tensor()
    assert torch.allclose(qb.norm(dim=-1), blocks.norm(dim=-1), atol=1e-5)
    nearest = roots[e8_nearest_root(blocks)]
    assert torch.allclose(qb / qb.norm(dim=-1, keepdim=True), nearest / 2 ** 0.5, atol=1e-6)


def _grad_and_value(mode: str, tau: float):
    u = torch.randn(6, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    out = e8_quantize(u, e8_roots_tensor(), tau, mode)
    (out * w).sum().backward()
    return u.grad, out.detach(), w


def test_temperature_changes_gradients_in_soft_form_and_only_forward_in_st_form():
    g_st1, v_st1, w = _grad_and_value("st", 0.05)
    g_st2, v_st2, _ = _grad_and_value("st", 0.5)
    assert (v_st1 - v_st2).abs().max() > 1e-2          # forward depends on tau
    assert torch.equal(g_st1, w) and torch.equal(g_st2, w)  # backward is the identity at any tau
    g_soft1, v_soft1, _ = _grad_and_value("soft", 0.05)
    g_soft2, _, _ = _grad_and_value("soft", 0.5)
    assert torch.allclose(v_soft1, v_st1)              # same forward as the straight-through form
    assert (g_soft1 - g_soft2).abs().max() > 1e-2
    assert (g_soft1 - w).abs().max() > 1e-2


def test_e8_adapter_is_a_tied_bottleneck_through_a_root():
    adapter = E8Adapter(24, 0.0)
    h = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        adapter.e8_adapter_gain.fill_(1.0)
        out = adapter(h)
        z = h @ adapter.down.weight.T                                         # (3, 5, 8)
        root = e8_roots_tensor()[e8_nearest_root(z)]
        want = (root * z.norm(dim=-1, keepdim=True) / 2 ** 0.5) @ adapter.down.weight
    assert torch.allclose(out, want, atol=1e-5)
    assert count_params(adapter) == 24 * 8 + 24


# --- Leech ----------------------------------------------------------------------------------------

def test_reduced_basis_spans_the_leech_lattice():
    red, hnf = leech_reduced_basis(), leech_basis()
    gram = red @ red.T
    assert np.allclose(gram, gram.round()) and np.all(np.diag(gram).round() == 4)
    assert abs(np.linalg.det(gram) - 1) < 1e-6
    change = red @ np.linalg.inv(hnf)        # red = U hnf with U integer and det +-1
    assert np.allclose(change, change.round(), atol=1e-6) and abs(abs(np.linalg.det(change)) - 1) < 1e-6


def test_seed_form_is_a_no_op_and_ours_are_not():
    g = torch.Generator().manual_seed(6)
    q = torch.randn(10, 48, generator=g, dtype=torch.float64)
    k = torch.randn(10, 48, generator=g, dtype=torch.float64)
    plain = q @ k.T
    Q = seed_kernel()
    assert torch.allclose(Q @ Q.T, torch.eye(24, dtype=torch.float64), atol=1e-12)
    seed = leech_block_apply(q, Q) @ leech_block_apply(k, Q).T
    assert (seed - plain).abs().max() < 1e-10
    L = torch.tensor(leech_reduced_basis()) / 2
    frozen = leech_block_apply(q, L) @ leech_block_apply(k, L).T              # x G y^T / 4
    metric = leech_block_apply(q, L @ L.T) @ k.T                               # q (G / 4) k^T
    assert torch.allclose(frozen, metric, atol=1e-10)
    assert (metric - plain).abs().max() > 0.1 * plain.abs().max()


def test_seed_form_is_a_no_op_inside_the_model():
    """leech_metric with its metric swapped for the seed's Q Q^T computes the plain model (float64);
    with the Leech Gram it does not."""
    plain = build(dtype=torch.float64)
    metric = build(dtype=torch.float64, attn_geometry="leech_metric")
    metric.load_state_dict(plain.state_dict())  # same parameter names: the metric is a buffer
    x = tokens()
    with torch.no_grad():
        ref, ours = plain(x), metric(x)
        Q = seed_kernel()
        for block in metric.blocks:
            block.attn.leech_metric.gram = Q @ Q.T
        seed = metric(x)
    assert (seed - ref).abs().max() < 1e-10
    assert (ours - ref).abs().max() > 1e-3


def test_leech_frozen_has_fewer_parameters_and_scores_through_the_gram():
    shape = dict(vocab_size=1024, num_layers=4, model_dim=192, num_heads=4, num_kv_heads=2)
    plain, frozen = GPT(GPTConfig(**shape)), GPT(GPTConfig(**shape, attn_geometry="leech_frozen"))
    D, kv_dim = 192, 2 * 48
    assert count_params(plain) - count_params(frozen) == 4 * (D * D + D * kv_dim)
    assert not any("basis" in name or "gram" in name for name in frozen.state_dict())
    x = torch.randn(1, 3, D, generator=torch.Generator().manual_seed(7))
    q, k = frozen.blocks[0].attn.leech_frozen(x, 4, 2)                         # (1, 3, 4, 48), (1, 3, 2, 48)
    G = torch.tensor(leech_reduced_basis() @ leech_reduced_basis().T, dtype=torch.float32) / 4
    x_heads = x.view(1, 3, 4, 48)
    want = leech_block_apply(x_heads[0, 0, 0], G) @ x_heads[0, 1, :2].mean(0)  # kv head 0 = mean of heads 0, 1
    assert torch.allclose(q[0, 0, 0] @ k[0, 1, 0], want, atol=1e-4)


# --- the model with each switch ---------------------------------------------------------------------

VARIANTS = [dict(attn_geometry="e8"), dict(attn_geometry="leech_frozen"), dict(attn_geometry="leech_metric"),
            dict(e8_sidebranch="st"), dict(e8_sidebranch="soft"), dict(e8_adapter=True),
            dict(attn_geometry="e8", e8_sidebranch="soft", e8_adapter=True, num_kv_heads=2)]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_variant_is_causal_differs_from_plain_and_trains(overrides):
    model, plain, x = build(**overrides), build(num_kv_heads=overrides.get("num_kv_heads", 1)), tokens()
    with torch.no_grad():
        ref = model(x)
        y = x.clone()
        y[:, 6:] = (y[:, 6:] + 5) % BASE["vocab_size"]
        assert torch.allclose(model(y)[:, :6], ref[:, :6], atol=1e-6)
        shared = {k: v for k, v in plain.state_dict().items() if k in model.state_dict()}
        model.load_state_dict(shared, strict=False)
        plain_out, ours = plain(x), model(x)
    assert (ours - plain_out).abs().max() > 1e-4
    model.train()
    opts = build_optimizers(model, matrix_lr=0.02, embed_lr=0.05, scalar_lr=0.02, muon_momentum=0.95,
                            muon_backend_steps=5, muon_weight_decay=0.0, adam_weight_decay=0.0,
                            beta1=0.9, beta2=0.95, adam_eps=1e-8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.loss(x, torch.roll(x, -1, 1)).backward()
    for opt in opts:
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    geometric = {n for n in before if "e8_" in n or "down" in n}
    assert geometric <= moved, geometric - moved
