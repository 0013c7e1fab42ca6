"""Lattice geometry done right: E8 roots, the binary Golay code, the Leech lattice, weight telemetry.
Usage (module lila_golf.lattice):

    roots = e8_roots()                      # (240, 8) float64, all of norm 2
    cos = leech_max_cosine(blocks)          # (N, 24) -> (N,), exact max over the 196,560 minimal vectors
    loss = leech_resonance_loss(hidden, 0.01)

Conventions (see ../shared/reference/lila.md, Conway & Sloane "Sphere Packings, Lattices and Groups"
ch. 4): the Leech lattice is built in integer coordinates scaled by sqrt(8) ("integer" arrays below),
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


def _e8_nearest_d8(x: torch.Tensor) -> torch.Tensor:
    """Nearest point of D8 (integer vectors, even sum) to x (..., 8): round every coordinate, and if
    the sum is odd re-round the worst-rounded coordinate the other way (Conway & Sloane, ch. 20)."""
    f = torch.round(x)
    odd = (f.sum(dim=-1) % 2) != 0                                          # (...,)
    err = x - f
    worst = err.abs().argmax(dim=-1, keepdim=True)                          # (..., 1)
    # move the worst coordinate one step towards x (if err == 0 either way is as good)
    step = torch.where(err.gather(-1, worst) >= 0, 1.0, -1.0).to(x.dtype)
    fixed = f.scatter_add(-1, worst, step)
    return torch.where(odd.unsqueeze(-1), fixed, f)


def e8_lattice_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest point of the E8 lattice (norm-2 roots, D8 u D8 + 1/2) to x (..., 8), same shape.

    Conway-Sloane decoder: decode in D8 and in D8 + 1/2 and keep the closer. Used for lattice vector
    quantisation of weights (scale the weights first; the lattice has minimal norm 2).
    """
    if x.shape[-1] != 8:
        raise ValueError(f"e8_lattice_nearest: last dim must be 8, got shape {tuple(x.shape)}")
    x = x if x.is_floating_point() else x.float()
    y0 = _e8_nearest_d8(x)
    y1 = _e8_nearest_d8(x - 0.5) + 0.5
    d0 = (x - y0).pow(2).sum(dim=-1, keepdim=True)
    d1 = (x - y1).pow(2).sum(dim=-1, keepdim=True)
    return torch.where(d0 <= d1, y0, y1)


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
    """Integer generators of sqrt(8) * Leech (lila.md): 2 g_k for the Golay rows, 4(e_1 + e_2),
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


# ---------------------------------------------------------------------------------------------------
# Weight telemetry

def _lattice_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D weight, descending, float32."""
    if w.ndim != 2:
        raise ValueError(f"weight telemetry needs a 2-D weight, got shape {tuple(w.shape)}")
    return torch.linalg.svdvals(w.detach().float())


def _lattice_stable_rank(s: torch.Tensor) -> float:
    return float((s.pow(2).sum() / s[0].pow(2).clamp_min(1e-30)).item())


def _lattice_condition(s: torch.Tensor) -> float:
    return float("inf") if s[-1] == 0 else float((s[0] / s[-1]).item())


def _lattice_resonance(s: torch.Tensor) -> float:
    return float(torch.sin(137.036 * s).mean().item())


def stable_rank(w: torch.Tensor) -> float:
    """Stable rank sum s_i^2 / s_max^2 of a 2-D weight (1 for rank one, up to min(m, n))."""
    return _lattice_stable_rank(_lattice_spectrum(w))


def condition_number(w: torch.Tensor) -> float:
    """s_max / s_min of a 2-D weight (inf when singular)."""
    return _lattice_condition(_lattice_spectrum(w))


def spectral_resonance(w: torch.Tensor) -> float:
    """mean(sin(137.036 * s_i)) over the singular values: LILA's "spectral resonance" figure.

    A descriptive statistic with no known meaning (for singular values of order 1 it behaves like a
    pseudo-random number in [-1, 1]); logged only so runs can be compared with the seed's logs.
    """
    return _lattice_resonance(_lattice_spectrum(w))


@torch.no_grad()
def weight_telemetry(model: torch.nn.Module) -> dict:
    """Per 2-D parameter: `<name>.stable_rank`, `<name>.condition_number`, `<name>.spectral_resonance`
    (the last a descriptive statistic with no known meaning). One SVD per weight, see the report
    figures in benchmarks; run it every few hundred steps."""
    out = {}
    for name, p in model.named_parameters():
        if p.ndim == 2:
            s = _lattice_spectrum(p)
            out[f"{name}.stable_rank"] = _lattice_stable_rank(s)
            out[f"{name}.condition_number"] = _lattice_condition(s)
            out[f"{name}.spectral_resonance"] = _lattice_resonance(s)
    return out
