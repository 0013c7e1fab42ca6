"""Leech lattice enumeration for the proofs and benchmarks, never run by a record: the 196,560
minimal vectors built from their three shapes, a brute-force max cosine against them, and
Fincke-Pohst enumeration of short vectors of a Gram matrix.

    vecs = leech_min_vectors()              # (196560, 24), scaled so their norm is 4
    x = short_vectors(gram, 4)              # integer coefficient vectors of norm <= 4
"""
import functools
import math

import numpy as np
import torch

from ..core.lattice import golay_codewords, golay_octads


@functools.lru_cache(maxsize=None)
def _leech_min_vectors_int() -> np.ndarray:
    """(196560, 24) int8 minimal vectors of sqrt(8) * Leech, norm 32, in three shapes."""
    shape_4 = []                                                  # (+-4, +-4, 0^22): 1,104
    for i in range(24):
        for j in range(i + 1, 24):
            for si in (4, -4):
                for sj in (4, -4):
                    v = np.zeros(24, dtype=np.int8)
                    v[i], v[j] = si, sj
                    shape_4.append(v)
    # (+-2^8 on an octad, even number of minus signs): 759 * 128 = 97,152
    masks = np.array([[(m >> k) & 1 for k in range(8)] for m in range(256)], dtype=np.int8)
    signs = 1 - 2 * masks[masks.sum(axis=1) % 2 == 0]            # (128, 8) of +-1
    octads = golay_octads()
    shape_2 = np.zeros((len(octads), 128, 24), dtype=np.int8)
    shape_2[np.arange(len(octads))[:, None, None], np.arange(128)[None, :, None],
            octads[:, None, :]] = 2 * signs[None, :, :]
    # (-+3, +-1^23): s = +1 on a codeword, -1 off it; the 3 sits at j with sign -s_j: 4096 * 24
    s = 2 * golay_codewords().astype(np.int8) - 1                 # (4096, 24)
    shape_3 = np.repeat(s[:, None, :], 24, axis=1)                # (4096, 24 positions, 24)
    diag = np.arange(24)
    shape_3[:, diag, diag] = -3 * s
    out = np.concatenate([np.stack(shape_4), shape_2.reshape(-1, 24), shape_3.reshape(-1, 24)])
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def _leech_min_vectors_scaled() -> np.ndarray:
    out = (_leech_min_vectors_int() / math.sqrt(8.0)).astype(np.float32)
    out.flags.writeable = False
    return out


def leech_min_vectors(scaled: bool = True) -> np.ndarray:
    """The 196,560 minimal vectors of the Leech lattice, (196560, 24), read-only.

    scaled=True: float32 at the basis scale (norm 4). scaled=False: int8 coordinates of sqrt(8) * Leech
    (norm 32). Order: 1,104 of shape (+-4^2), 97,152 octad vectors, 98,304 of shape (-+3, +-1^23).
    """
    return _leech_min_vectors_scaled() if scaled else _leech_min_vectors_int()


def leech_max_cosine_bruteforce(blocks: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Reference: max cosine of each block (..., 24) against all 196,560 minimal vectors by chunked
    matmul (~3 s per 4,096 blocks on a 2-core CPU)."""
    if blocks.shape[-1] != 24:
        raise ValueError(f"leech: last dim must be 24, got shape {tuple(blocks.shape)}")
    dtype = torch.float64 if blocks.dtype == torch.float64 else torch.float32
    b = blocks.reshape(-1, 24).to(dtype)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    vecs = torch.tensor(leech_min_vectors(scaled=False), device=b.device).to(dtype)
    vecs = vecs / math.sqrt(32.0)                                            # unit vectors
    best = torch.full((b.shape[0],), -2.0, dtype=dtype, device=b.device)
    for start in range(0, vecs.shape[0], chunk):
        best = torch.maximum(best, (b @ vecs[start:start + chunk].T).amax(dim=1))
    return best.reshape(blocks.shape[:-1])


def short_vectors(gram: np.ndarray, bound: int) -> np.ndarray:
    """Fincke-Pohst enumeration: all nonzero integer x with x^T gram x <= bound, one of each +-x pair
    (the last nonzero coordinate is positive). gram is an integer positive definite (n, n) matrix.
    Returns (K, n) int64. The tree is walked breadth first, one level per step, vectorised over the
    open nodes; pruning is in float64 with slack and every result is checked exactly at the end.
    Reduce the basis first (lll_reduce): the tree size depends on it."""
    g = np.asarray(gram)
    n = g.shape[0]
    # x^T g x = sum_i d_i (x_i + sum_{j>i} mu_ji x_j)^2 with g = L diag(d) L^T, L[j, i] = mu_ji
    chol = np.linalg.cholesky(g.astype(np.float64))
    d = np.diag(chol) ** 2
    mu = chol / np.diag(chol)[None, :]
    slack = 1e-7 * max(1, bound)
    x = np.zeros((1, n), dtype=np.int64)
    partial = np.zeros((1, n))             # partial[:, k] = sum_{j > level} mu_jk x_j, the centre is -partial
    remaining = np.array([bound + slack])
    zero_above = np.array([True])          # all coordinates above the level are zero
    for i in range(n - 1, -1, -1):
        center = -partial[:, i]
        radius = np.sqrt(np.maximum(remaining, 0.0) / d[i])
        lo = np.ceil(center - radius - 1e-9).astype(np.int64)
        hi = np.floor(center + radius + 1e-9).astype(np.int64)
        lo = np.where(zero_above, np.maximum(lo, 0), lo)   # sign symmetry
        count = np.maximum(hi - lo + 1, 0)
        parent = np.repeat(np.arange(len(lo)), count)
        xi = lo[parent] + np.arange(len(parent)) - np.repeat(np.cumsum(count) - count, count)
        left = remaining[parent] - d[i] * (xi - center[parent]) ** 2
        keep = left >= -slack
        parent, xi = parent[keep], xi[keep]
        x = x[parent]
        x[:, i] = xi
        partial = partial[parent, :i] + xi[:, None] * mu[i, :i][None, :]
        remaining, zero_above = left[keep], zero_above[parent] & (xi == 0)
    x = x[~zero_above]                     # drop the zero vector
    exact = np.einsum("ki,ij,kj->k", x, g.astype(np.int64), x)
    return x[exact <= bound]
