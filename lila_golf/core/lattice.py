"""Lattice maths the geometry switches use: E8 roots, the binary Golay code, the Leech lattice.
Usage (module lila_golf.core.lattice):

    roots = e8_roots()                      # (240, 8) float64, all of norm 2
    cos = leech_max_cosine(blocks)          # (N, 24) -> (N,), exact max over the 196,560 minimal vectors
    loss = leech_resonance_loss(hidden, 0.01)

Conventions (Conway & Sloane, "Sphere Packings, Lattices and Groups", ch. 4): the Leech lattice is built in integer coordinates scaled by sqrt(8) ("integer" arrays below),
and divided by sqrt(8) so the Gram matrix is unimodular ("scaled" arrays). Everything is built lazily
and cached with functools.lru_cache; cached numpy arrays are read-only.
"""
import functools
import math

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------------
# E8

@functools.lru_cache(maxsize=None)
def e8_roots() -> np.ndarray:
    """The 240 roots of E8, (240, 8) float64: +-e_i +- e_j (112) and (+-1/2)^8 with an even number
    of minus signs (128). Read-only."""
    roots = []
    for i in range(8):
        for j in range(i + 1, 8):
            for si in (1.0, -1.0):
                for sj in (1.0, -1.0):
                    r = np.zeros(8)
                    r[i], r[j] = si, sj
                    roots.append(r)
    for mask in range(256):
        minus = [(mask >> k) & 1 for k in range(8)]
        if sum(minus) % 2 == 0:
            roots.append(np.array([-0.5 if m else 0.5 for m in minus]))
    out = np.stack(roots)
    out.flags.writeable = False
    return out


def e8_nearest_root(x: torch.Tensor) -> torch.Tensor:
    """Index (...,) of the E8 root nearest to each x (..., 8).

    All roots have the same norm, so the nearest root in Euclidean distance, the root of largest
    inner product and the root of largest cosine are the same one: we take argmax of x @ roots^T.
    """
    if x.shape[-1] != 8:
        raise ValueError(f"e8_nearest_root: last dim must be 8, got shape {tuple(x.shape)}")
    roots = torch.tensor(e8_roots(), dtype=x.dtype if x.is_floating_point() else torch.float32,
                            device=x.device)
    return (x.to(roots.dtype) @ roots.T).argmax(dim=-1)


# ---------------------------------------------------------------------------------------------------
# Extended binary Golay code [24, 12, 8]

def _golay_icosahedron_adjacency() -> np.ndarray:
    """(12, 12) 0/1 adjacency of the icosahedron: vertices the cyclic permutations of (0, +-1, +-phi),
    neighbours at distance 2 (the edge length); every vertex has degree 5."""
    phi = (1 + 5 ** 0.5) / 2
    verts = []
    for a in (1.0, -1.0):
        for b in (phi, -phi):
            for k in range(3):
                verts.append(np.roll(np.array([0.0, a, b]), k))
    verts = np.stack(verts)
    d2 = ((verts[:, None, :] - verts[None, :, :]) ** 2).sum(-1)
    return (np.abs(d2 - 4.0) < 1e-9).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def golay_generator() -> np.ndarray:
    """Generator matrix [I_12 | B] of the extended Golay code, (12, 24) uint8, with B = J - A and A the
    icosahedron's adjacency matrix (Conway's construction; B is symmetric and B B^T = I mod 2)."""
    b = 1 - _golay_icosahedron_adjacency()
    out = np.concatenate([np.eye(12, dtype=np.uint8), b.astype(np.uint8)], axis=1)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def golay_codewords() -> np.ndarray:
    """All 4096 codewords, (4096, 24) uint8. Row k is u G with u the 12 bits of k, most significant
    first (u_j = (k >> (11 - j)) & 1), so bit j of the index is coordinate j of the codeword."""
    k = np.arange(4096)
    u = ((k[:, None] >> (11 - np.arange(12))[None, :]) & 1).astype(np.int64)   # (4096, 12)
    out = ((u @ golay_generator().astype(np.int64)) % 2).astype(np.uint8)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def golay_octads() -> np.ndarray:
    """The 759 octads (weight-8 codewords) as sorted position lists, (759, 8) int64."""
    words = golay_codewords()
    octads = words[words.sum(axis=1) == 8]
    out = np.stack([np.nonzero(w)[0] for w in octads]).astype(np.int64)
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------------------------------------
# Leech lattice: basis by exact Hermite normal form, minimal vectors from the three shapes

def hermite_normal_form(rows: list) -> list:
    """Row-style Hermite normal form of an integer matrix (list of lists of python ints), exact.

    Returns the nonzero rows of the HNF: upper triangular in echelon form, positive pivots, entries
    above each pivot reduced into [0, pivot). The rows generate the same lattice as the input.
    """
    a = [[int(v) for v in row] for row in rows]
    n_cols = len(a[0]) if a else 0
    r = 0
    for c in range(n_cols):
        while True:  # Euclid on column c among rows r..: smallest nonzero entry becomes the pivot
            nonzero = [i for i in range(r, len(a)) if a[i][c] != 0]
            if not nonzero:
                break
            p = min(nonzero, key=lambda i: abs(a[i][c]))
            a[r], a[p] = a[p], a[r]
            clean = True
            for i in range(r + 1, len(a)):
                q = a[i][c] // a[r][c]
                if q:
                    a[i] = [x - q * y for x, y in zip(a[i], a[r])]
                clean = clean and a[i][c] == 0
            if clean:
                break
        if r == len(a) or a[r][c] == 0:
            continue
        if a[r][c] < 0:
            a[r] = [-x for x in a[r]]
        for i in range(r):
            q = a[i][c] // a[r][c]
            if q:
                a[i] = [x - q * y for x, y in zip(a[i], a[r])]
        r += 1
    return a[:r]


def _leech_generating_set() -> list:
    """Integer generators of sqrt(8) * Leech (Conway & Sloane ch. 4, sec. 11): 2 g_k for the Golay rows, 4(e_1 + e_2),
    4(e_i - e_{i+1}), and (-3, 1^23)."""
    rows = [[2 * int(v) for v in g] for g in golay_generator()]
    e = np.eye(24, dtype=np.int64)
    rows.append([int(v) for v in 4 * (e[0] + e[1])])
    rows += [[int(v) for v in 4 * (e[i] - e[i + 1])] for i in range(23)]
    rows.append([-3] + [1] * 23)
    return rows


@functools.lru_cache(maxsize=None)
def _leech_basis_int() -> np.ndarray:
    hnf = hermite_normal_form(_leech_generating_set())
    if len(hnf) != 24:
        raise RuntimeError(f"Leech generating set has rank {len(hnf)}, expected 24")
    out = np.array(hnf, dtype=np.int64)
    out.flags.writeable = False
    return out


def leech_basis(scaled: bool = True) -> np.ndarray:
    """Basis of the Leech lattice, (24, 24), rows are basis vectors (Hermite normal form).

    scaled=True: float64, divided by sqrt(8), Gram matrix integral, even, determinant 1.
    scaled=False: the int64 integer-coordinate basis of sqrt(8) * Leech (determinant 8^12).
    """
    basis = _leech_basis_int()
    if not scaled:
        return basis
    out = basis / math.sqrt(8.0)
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------------------------------------
# Exact max cosine to the Leech minimal vectors, from the structure (no 196,560-column matmul)

@functools.lru_cache(maxsize=8)
def _leech_search_tables(device: str, dtype: torch.dtype) -> tuple:
    """Tensors for leech_max_cosine on one device/dtype.

    signs (4096, 24): +-1 codeword signs, row k = codeword k (bit j of k is coordinate j, j < 12);
    signs_by_parity (4096, 24): the same rows listed by the bits of coordinates 12..23 (also an
    information set, since B is invertible), so bit j of the row index is coordinate 12 + j;
    parity_order (4096,) the codeword index of each of those rows; octads (759, 8) positions;
    octad_mask (759, 24) 0/1, in dtype and in float64.
    """
    words = golay_codewords().astype(np.int64)
    parity_index = (words[:, 12:] << (11 - np.arange(12))[None, :]).sum(axis=1)   # (4096,)
    parity_order = np.empty(4096, dtype=np.int64)
    parity_order[parity_index] = np.arange(4096)
    octads = golay_octads()
    octad_mask = np.zeros((len(octads), 24))
    octad_mask[np.arange(len(octads))[:, None], octads] = 1.0
    dev = torch.device(device)
    signs = 2 * words - 1
    return (torch.as_tensor(signs, dtype=dtype, device=dev),
            torch.as_tensor(signs[parity_order], dtype=dtype, device=dev),
            torch.as_tensor(parity_order, device=dev),
            torch.as_tensor(octads.copy(), device=dev),
            torch.as_tensor(octad_mask, dtype=dtype, device=dev),
            torch.as_tensor(octad_mask, dtype=torch.float64, device=dev))


@functools.lru_cache(maxsize=8)
def _leech_half_table(device: str) -> torch.Tensor:
    """(6, 2, 32) indices into 0..63 whose bit j (most significant first) equals 0 / 1."""
    idx = np.arange(64)
    table = np.stack([np.stack([idx[((idx >> (5 - j)) & 1) == bit] for bit in (0, 1)]) for j in range(6)])
    return torch.as_tensor(table, device=torch.device(device))


def _leech_halves_6(t: torch.Tensor) -> tuple:
    """t (n, 64) indexed by 6 bits. Returns (values, indices), each (n, 6, 2): for every bit j and
    value 0 / 1, the max of t over indices with that bit value, and where it is."""
    table = _leech_half_table(str(t.device))
    vals, arg = t[:, table.view(-1)].view(-1, 6, 2, 32).max(dim=-1)
    return vals, table.expand(t.shape[0], 6, 2, 32).gather(3, arg.unsqueeze(-1)).squeeze(-1)


def _leech_halves_12(t: torch.Tensor) -> tuple:
    """t (n, 4096) indexed by 12 bits, most significant first. Returns (values, partners), each
    (n, 12, 2): for every bit j, the max of t over indices with bit j = 0 / 1, and for j < 6 the high
    6 bits / for j >= 6 the low 6 bits of where it is. One pass of row maxima and one of column maxima
    over the (n, 64, 64) view, then 64-long problems."""
    t3 = t.view(t.shape[0], 64, 64)                  # [n, high 6 bits, low 6 bits]
    hi_val, hi_idx = _leech_halves_6(t3.amax(dim=2))
    lo_val, lo_idx = _leech_halves_6(t3.amax(dim=1))
    return torch.cat([hi_val, lo_val], dim=1), torch.cat([hi_idx, lo_idx], dim=1)


def _leech_best_shape_4(b: torch.Tensor) -> tuple:
    """(+-4, +-4, 0^22): the two largest |b_i| with matching signs. Returns (<b, v>, v) for the best
    integer-coordinate vector v (n, 24)."""
    sgn = torch.where(b < 0, -1.0, 1.0).to(b.dtype)
    top, pos = b.abs().topk(2, dim=-1)                                       # (n, 2)
    v = torch.zeros_like(b).scatter_(1, pos, 4.0 * sgn.gather(1, pos))
    return 4.0 * top.sum(dim=-1), v


def _leech_best_octad(b: torch.Tensor, tables: tuple) -> tuple:
    """(+-2^8 on an octad, even number of minus signs): per octad, signs follow b; if b has an odd
    number of negative coordinates there, flip the smallest |b_i|. Returns (<b, v>, v)."""
    _, _, _, octads, octad_mask, octad_mask64 = tables
    n = b.shape[0]
    sgn = torch.where(b < 0, -1.0, 1.0).to(b.dtype)
    absb = b.abs()
    sorted_abs, order = absb.sort(dim=1)
    rank = order.argsort(dim=1)                                              # rank of |b_i|, (n, 24)
    # the sum of 2^-rank over an octad is exact in float64 and its leading bit 2^-r is the octad's
    # smallest rank r: read it from the exponent field (bits 52..62) instead of gathering 8 values
    rank_sum = torch.exp2(-rank.to(torch.float64)) @ octad_mask64.T        # (n, 759) in [2^-23, 2)
    smallest_rank = 1023 - (rank_sum.view(torch.int64) >> 52)
    smallest = sorted_abs.gather(1, smallest_rank)                          # (n, 759)
    odd = (((b < 0).to(b.dtype) @ octad_mask.T).to(torch.int32) & 1).bool()  # odd count of b_i < 0
    sum_abs = absb @ octad_mask.T
    best, o = torch.where(odd, sum_abs - 2.0 * smallest, sum_abs).max(dim=-1)   # (n,)
    best = 2.0 * best
    rows = torch.arange(n, device=b.device)
    chosen = octads[o]                                                       # (n, 8)
    flip = chosen.gather(1, absb.gather(1, chosen).argmin(dim=1, keepdim=True)).squeeze(1)
    v = 2.0 * sgn * octad_mask[o]
    v[rows, flip] = torch.where(odd[rows, o], -v[rows, flip], v[rows, flip])
    return best, v


def _leech_best_shape_3(b: torch.Tensor, tables: tuple) -> tuple:
    """(-+3, +-1^23): v = s - 4 s_j e_j for a codeword sign vector s and a position j, so
    <b, v> = <b, s> - 4 s_j b_j. For each (j, s_j) the best <b, s> over the 2048 codewords with that
    sign at j comes from hypercube reductions over two information sets (coordinates 0..11 and
    12..23). Returns (<b, v>, v)."""
    signs, signs_by_parity, parity_order, _, _, _ = tables
    n = b.shape[0]
    p_info, p_par = b @ signs.T, b @ signs_by_parity.T                     # <b, s>, (n, 4096) each
    val_info, part_info = _leech_halves_12(p_info)
    val_par, part_par = _leech_halves_12(p_par)
    pm = torch.tensor([-1.0, 1.0], dtype=b.dtype, device=b.device)          # s_j for bit 0 / 1
    score = torch.cat([val_info, val_par], dim=1) - 4.0 * b[:, :, None] * pm   # (n, 24, 2)
    best, jb = score.view(n, 48).max(dim=-1)
    # the winning codeword: its half (high or low 6 bits) is known, search the other 64
    rows, j = torch.arange(n, device=b.device), jb // 2
    partner = torch.cat([part_info, part_par], dim=1).view(n, 48)[rows, jb]
    ar = torch.arange(64, device=b.device)
    cand = torch.where(((j % 12) < 6)[:, None], partner[:, None] * 64 + ar, ar * 64 + partner[:, None])
    in_par = (j >= 12)[:, None]
    vals = torch.where(in_par, p_par.gather(1, cand), p_info.gather(1, cand))
    k = cand.gather(1, vals.argmax(dim=1, keepdim=True)).squeeze(1)
    word = torch.where(in_par.squeeze(1), parity_order[k], k)
    v = signs[word]
    v[rows, j] = -3.0 * v[rows, j]
    return best, v


@torch.no_grad()
def leech_nearest_min_vector(blocks: torch.Tensor) -> torch.Tensor:
    """The minimal vector of largest cosine with each block: (..., 24) -> (..., 24), at the scaled
    basis (norm 4), same dtype as blocks (search in float32 at least). Exact, from the structure."""
    if blocks.shape[-1] != 24:
        raise ValueError(f"leech: last dim must be 24, got shape {tuple(blocks.shape)}")
    work_dtype = torch.float64 if blocks.dtype == torch.float64 else torch.float32
    b = blocks.reshape(-1, 24).to(work_dtype)
    tables = _leech_search_tables(str(b.device), work_dtype)
    out = torch.empty_like(b)
    chunk = 4096  # keeps the (chunk, 4096) score matrix at 64 MB in float32
    for start in range(0, b.shape[0], chunk):
        c = b[start:start + chunk]
        cands = [_leech_best_shape_4(c), _leech_best_octad(c, tables), _leech_best_shape_3(c, tables)]
        scores = torch.stack([s for s, _ in cands], dim=1)                  # (n, 3)
        vecs = torch.stack([v for _, v in cands], dim=1)                    # (n, 3, 24)
        shape = scores.argmax(dim=1)
        out[start:start + chunk] = vecs[torch.arange(c.shape[0], device=c.device), shape]
    return (out / math.sqrt(8.0)).to(blocks.dtype).reshape(blocks.shape)


def leech_max_cosine(blocks: torch.Tensor) -> torch.Tensor:
    """Exact max over the 196,560 Leech minimal vectors v of cos(block, v): (..., 24) -> (...).

    The maximising vector is found without gradients from the lattice structure (1,104 + 759 octads
    + 4,096 codewords x 24 positions), then the cosine with it is recomputed with autograd, which is
    the gradient of the max almost everywhere. A zero block has cosine 0. The value is always the
    exact cosine with a true minimal vector; which vector wins is decided in the search dtype
    (float64 for float64 input, else float32), so near-ties can cost ~1e-7 in float32 (and ~1e-3
    on a GPU with TF32 matmuls enabled).
    """
    v = leech_nearest_min_vector(blocks.detach())                            # (..., 24), norm 4
    dot = (blocks * v).sum(dim=-1)
    return dot / (blocks.norm(dim=-1).clamp_min(1e-12) * 2.0)


def leech_resonance_loss(hidden: torch.Tensor, weight: float, max_blocks: int = 0) -> torch.Tensor:
    """weight * (1 - mean over the 24-dim blocks of the last dim of the max cosine to the Leech
    minimal vectors). hidden (..., D) with D a multiple of 24; returns a scalar.

    max_blocks > 0 averages over that many evenly spaced blocks instead of all of them: an estimate
    of the same mean, for CPU runs (the exact search costs ~45 us of one CPU core per block, see
    benchmarks/leech_enumeration.py).
    """
    if hidden.shape[-1] % 24 != 0:
        raise ValueError(f"leech_resonance_loss: last dim {hidden.shape[-1]} of hidden "
                         f"{tuple(hidden.shape)} is not a multiple of 24")
    blocks = hidden.reshape(-1, 24)
    if 0 < max_blocks < blocks.shape[0]:
        keep = torch.linspace(0, blocks.shape[0] - 1, max_blocks, device=blocks.device).long()
        blocks = blocks[keep]
    return weight * (1.0 - leech_max_cosine(blocks).mean())


# ---------------------------------------------------------------------------------------------------
# Lattice reduction and short-vector enumeration (used to prove the Leech basis; not on a hot path)

def lll_reduce(basis: np.ndarray, delta: float = 0.99) -> np.ndarray:
    """LLL-reduce the rows of an integer basis (n, d). Row operations are exact (python ints, so the
    result generates the same lattice); Gram-Schmidt data are float64, fine for small entries."""
    b = [[int(v) for v in row] for row in np.asarray(basis)]
    n = len(b)

    def gram_schmidt():
        g = np.array([[float(sum(x * y for x, y in zip(r, s))) for s in b] for r in b])
        chol = np.linalg.cholesky(g)                       # g = chol chol^T
        diag = np.diag(chol)
        return chol / diag[None, :], diag ** 2             # mu (unit lower), |b*_i|^2

    mu, bstar = gram_schmidt()
    k = 1
    while k < n:
        for j in range(k - 1, -1, -1):                     # size reduction of row k
            q = int(round(mu[k, j]))
            if q:
                b[k] = [x - q * y for x, y in zip(b[k], b[j])]
                mu[k, :j + 1] -= q * mu[j, :j + 1]
        if bstar[k] >= (delta - mu[k, k - 1] ** 2) * bstar[k - 1]:
            k += 1
        else:
            b[k], b[k - 1] = b[k - 1], b[k]
            mu, bstar = gram_schmidt()
            k = max(k - 1, 1)
    return np.array(b, dtype=np.int64)
