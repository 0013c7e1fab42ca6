"""Lattice geometry inside the model: E8 attention bias, E8 quantiser branches, Leech attention.

Switches (Hyperparameters, model group; all off by default, and off means the plain model):

    ATTN_GEOMETRY=e8            E8AttentionBias: a root-system bias on the attention logits
    ATTN_GEOMETRY=leech_frozen  LeechFrozenQK: frozen Q/K from the Leech basis, no W_q, W_k
    ATTN_GEOMETRY=leech_metric  LeechMetric: learned q, k scored through the Leech Gram metric
    E8_SIDEBRANCH=st|soft|off   E8SideBranch: residual side branch quantised to the E8 roots
    E8_TEMPERATURE=0.1          softness of every E8 root assignment (0 = hard nearest root)
    E8_ADAPTER=1                E8Adapter: tied down/up projection through an 8-dim E8 bottleneck

The mathematics (Conway & Sloane, "Sphere Packings, Lattices and Groups", ch. 4 and 8):

E8 root assignment of an 8-dim block u: p_r(u) = softmax_r(cos(u, r) / tau) over the 240 roots r
(cos(u, r) = u.r / (|u| sqrt 2)); tau = 0 is the one-hot nearest root. The soft root of u is
rho(u) = sum_r p_r(u) r, a point of the roots' convex hull (the nearest root itself at tau = 0).

E8 attention bias, head h, query t, key s, over the n = head_dim / 8 blocks of (rms-normed, pre-RoPE)
q and k:   bias_h(t, s) = gamma_h / (2 n) * sum_b <rho(q_tb), rho(k_sb)>
           = gamma_h / (2 n) * sum_b p(q_tb)^T (R R^T) p(k_sb),
the inner product of the two root-assignment distributions under the root Gram matrix R R^T. At
tau = 0 each term is <r, r'> / 2 in {-1, -1/2, 0, 1/2, 1}: the angle class of the two nearest roots
in the root system. So |bias_h| <= |gamma_h|; gamma_h is learned per head (init E8_BIAS_INIT).

E8 quantiser of a vector (every 8-dim block u): Q(u) = rho(u) |u| / sqrt 2 (the soft root rescaled to
|u|, so the quantiser snaps directions and keeps magnitudes). "soft": Q is differentiated through
(the gradient depends on tau); "st" (straight-through): forward Q, backward identity, so tau changes
the forward only (the seed's estimator).

Leech: L is the LLL-reduced Leech basis (rows basis vectors of norm 4, Gram G = L L^T integral, even,
unimodular; leech_reduced_basis). One orthogonal matrix on both q and k cancels ((qU)(kU)^T = q k^T),
so we use the non-orthogonal basis: "frozen" maps each 24-block x_b of the normed input to the
lattice point x_b L / 2 (so q.k = x G y^T / 4), "metric" multiplies the learned q by G / 4 on one side.
"""
import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .lattice import e8_roots, leech_basis, lll_reduce

E8_BIAS_INIT = 0.1  # attention-bias strength per head at init: small against logits of order 1
E8_GAIN_INIT = 0.01  # side-branch / adapter output gain per dim at init (the seed's 0.01 scale)


# ---------------------------------------------------------------------------------------------------
# E8

def e8_roots_tensor() -> torch.Tensor:
    """The 240 E8 roots as a float32 tensor (240, 8), for module buffers."""
    return torch.tensor(e8_roots(), dtype=torch.float32)


def e8_root_assignment(u: torch.Tensor, roots: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft assignment of 8-dim blocks to the roots: u (..., 8) -> p (..., 240), rows sum to 1,
    softmax(cos(u, r) / temperature); temperature 0 gives the one-hot nearest root."""
    cos = F.normalize(u, dim=-1) @ roots.to(u.dtype).T / math.sqrt(2.0)  # roots have norm sqrt 2
    if temperature == 0:
        return F.one_hot(cos.argmax(dim=-1), roots.shape[0]).to(u.dtype)
    return torch.softmax(cos / temperature, dim=-1)


def e8_soft_root(u: torch.Tensor, roots: torch.Tensor, temperature: float) -> torch.Tensor:
    """rho(u) = sum_r p_r(u) r: u (..., 8) -> (..., 8), the nearest root itself at temperature 0."""
    if temperature == 0:  # gather instead of a one-hot matmul
        idx = (u @ roots.to(u.dtype).T).argmax(dim=-1)
        return roots.to(u.dtype)[idx]
    return e8_root_assignment(u, roots, temperature) @ roots.to(u.dtype)


def _e8_quantize_blocks(u: torch.Tensor, roots: torch.Tensor, temperature: float) -> torch.Tensor:
    blocks = u.unflatten(-1, (-1, 8))                                      # (..., k, 8)
    norm = blocks.norm(dim=-1, keepdim=True)
    return (e8_soft_root(blocks, roots, temperature) * norm / math.sqrt(2.0)).flatten(-2)


def e8_quantize(u: torch.Tensor, roots: torch.Tensor, temperature: float, mode: str) -> torch.Tensor:
    """E8 quantiser Q on every 8-dim block of u (..., 8k), same shape: block -> rho(block) |block| / sqrt 2.
    mode "soft": differentiable through the assignment; "st": forward Q, backward identity."""
    if mode == "st":
        with torch.no_grad():  # the backward is the identity: keep no graph of the assignment
            q = _e8_quantize_blocks(u, roots, temperature)
        return u + (q - u).detach()
    if mode != "soft":
        raise ValueError(f"e8_quantize: mode {mode!r} is not 'st' or 'soft'")
    return _e8_quantize_blocks(u, roots, temperature)


class E8AttentionBias(nn.Module):
    """Root-system bias on attention logits (formula in the module docstring).

    The bias is a sum of inner products, so it enters attention as extra channels rather than as a
    (B, H, T, T) mask (which would need its own gradient and the slow SDPA path): features(q, k)
    gives q_extra = rho(q) gamma_h sqrt(hd) / (2n) and k_extra = rho(k); attention over
    [q, q_extra], [k, k_extra] with scale 1/sqrt(hd) adds exactly bias_h(t, s) to the logits.
    forward(q, k) returns the bias itself, (B, H, T, T), -inf above the diagonal (for tests).
    Cost: the (tokens, hd/8, 240) root assignments of q and k and a doubled q.k head dim.
    """

    def __init__(self, num_heads: int, head_dim: int, temperature: float):
        super().__init__()
        if head_dim % 8:
            raise ValueError(f"E8 attention needs head_dim a multiple of 8, got {head_dim}")
        self.temperature, self.num_blocks = temperature, head_dim // 8
        self.e8_bias_gain = nn.Parameter(torch.full((num_heads,), E8_BIAS_INIT))
        self.register_buffer("roots", e8_roots_tensor(), persistent=False)

    def features(self, q: torch.Tensor, k: torch.Tensor) -> tuple:
        """q (B, T, H, hd), k (B, T, K, hd) -> (q_extra, k_extra) of the same shapes."""
        hd = q.size(-1)
        gain = self.e8_bias_gain * (math.sqrt(hd) / (2 * self.num_blocks))
        return self.soft_roots(q) * gain.to(q.dtype)[:, None], self.soft_roots(k)

    def soft_roots(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, heads, hd) -> (B, T, heads, hd): rho of every 8-dim block, blocks concatenated."""
        return e8_soft_root(x.unflatten(-1, (-1, 8)), self.roots, self.temperature).flatten(-2)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        T, H, K = q.size(1), q.size(2), k.size(2)
        qe, ke = self.features(q, k)
        ke = ke.repeat_interleave(H // K, dim=2)                           # GQA: kv head per group
        bias = qe.transpose(1, 2) @ ke.permute(0, 2, 3, 1) / math.sqrt(q.size(-1))  # (B, H, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        return bias.masked_fill(future, float("-inf"))


class E8SideBranch(nn.Module):
    """Residual side branch: h (B, T, D) normed residual -> gain * Q(h), Q the E8 quantiser on D/8
    blocks (mode "st" or "soft", temperature as above); gain per dim, init E8_GAIN_INIT."""

    def __init__(self, dim: int, mode: str, temperature: float):
        super().__init__()
        self.mode, self.temperature = mode, temperature
        self.e8_side_gain = nn.Parameter(torch.full((dim,), E8_GAIN_INIT))
        self.register_buffer("roots", e8_roots_tensor(), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.e8_side_gain.to(h.dtype) * e8_quantize(h, self.roots, self.temperature, self.mode)


class E8Adapter(nn.Module):
    """The seed's "E8-structured linear layer" as an adapter: z = W h (8 dims), quantised to the E8
    roots (straight-through, at the E8 temperature), mapped back by the same W transposed (tied):
    out = gain * W^T Q(W h). W (8, D) is an nn.Linear weight (Muon); gain per dim, init E8_GAIN_INIT."""

    def __init__(self, dim: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.down = nn.Linear(dim, 8, bias=False)
        self.e8_adapter_gain = nn.Parameter(torch.full((dim,), E8_GAIN_INIT))
        self.register_buffer("roots", e8_roots_tensor(), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = e8_quantize(self.down(h), self.roots, self.temperature, "st")  # (B, T, 8)
        return self.e8_adapter_gain.to(h.dtype) * F.linear(z, self.down.weight.t())


# ---------------------------------------------------------------------------------------------------
# Leech

@functools.lru_cache(maxsize=None)
def leech_reduced_basis() -> np.ndarray:
    """LLL-reduced basis of the Leech lattice (24, 24) float64, rows basis vectors, all of norm 4
    (minimal vectors); Gram matrix integral, even, determinant 1. ~1 s the first time, then cached."""
    out = lll_reduce(leech_basis(scaled=False)) / math.sqrt(8.0)
    out.flags.writeable = False
    return out


def leech_block_apply(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Block-diagonal right multiplication: x (..., 24m) -> (..., 24m), every 24-block x_b -> x_b M."""
    return (x.unflatten(-1, (-1, 24)) @ matrix.to(x.dtype)).flatten(-2)


class LeechFrozenQK(nn.Module):
    """Frozen queries and keys from the Leech basis: no W_q, W_k (D^2 (1 + K/H) fewer
    parameters per layer).

    Mapping: the normed input x (B, T, D), D = H * hd, is cut into H heads of hd features (head i
    reads features i*hd .. (i+1)*hd - 1); q_i = blockdiag(L / 2) applied on the right to each
    24-block (the lattice point with those coordinates). K < H kv heads (GQA): kv head j takes the
    mean of q over its H/K query heads, so k has K * hd features. Then q.k = x G y^T / 4 per block:
    the inputs scored through the Leech Gram metric. The basis is a buffer, not a Parameter.
    """

    def __init__(self):
        super().__init__()
        basis = torch.tensor(leech_reduced_basis(), dtype=torch.float32) / 2.0  # Gram diag 1
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, x: torch.Tensor, num_heads: int, num_kv_heads: int) -> tuple:
        B, T, D = x.shape
        q = leech_block_apply(x, self.basis).view(B, T, num_heads, D // num_heads)
        k = q.view(B, T, num_kv_heads, num_heads // num_kv_heads, -1).mean(dim=3)  # (B, T, K, hd)
        return q, k


class LeechMetric(nn.Module):
    """Learned q scored through the Leech Gram metric: q (..., hd) -> q blockdiag(G / 4), applied to
    q only (before RoPE, so scores q G R_{s-t} k^T stay relative). G / 4 has trace 24 (mean
    eigenvalue 1). The same W_q could learn any fixed metric, so this is a reparametrisation that
    changes the optimisation, not the function class."""

    def __init__(self):
        super().__init__()
        basis = torch.tensor(leech_reduced_basis(), dtype=torch.float64)
        self.register_buffer("gram", (basis @ basis.T / 4.0).float(), persistent=False)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return leech_block_apply(q, self.gram)
