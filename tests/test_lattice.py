"""Tests for lila_golf.core.lattice: the E8, Golay and Leech facts of ../shared/reference/lila.md, proved
with exact integer arithmetic where they are claimed exactly, and the fast searches against brute force.

    .venv/bin/python -m pytest tests/test_lattice.py -q
"""
import itertools
import math

import numpy as np
import pytest
import torch

from lila_golf.core.lattice import (e8_nearest_root, e8_roots, golay_codewords, golay_generator, golay_octads,
                                    hermite_normal_form, leech_basis, leech_max_cosine, leech_nearest_min_vector,
                                    leech_resonance_loss, lll_reduce)
from lila_golf.core.telemetry import condition_number, spectral_resonance, stable_rank, weight_telemetry
from lila_golf.research.latticevq import e8_lattice_nearest
from lila_golf.research.leech import leech_max_cosine_bruteforce, leech_min_vectors, short_vectors


# --------------------------------------------------------------------------------------------------
# helpers written from the definitions in lila.md, independent of the module's constructions

def in_leech_int(x: np.ndarray) -> np.ndarray:
    """Membership of integer rows x (K, 24) in sqrt(8) * Leech: same parity m for all coordinates,
    each residue class mod 4 a Golay codeword, sum = 4m mod 8."""
    code = {int(w) for w in golay_codewords().astype(np.int64) @ (1 << np.arange(24))}
    x = np.asarray(x, dtype=np.int64)
    parity = x % 2
    ok = (parity == parity[:, :1]).all(axis=1)
    ok &= (x.sum(axis=1) % 8) == (4 * parity[:, 0]) % 8
    for a in range(4):
        masks = ((x % 4) == a).astype(np.int64) @ (1 << np.arange(24))
        ok &= np.array([int(m) in code for m in masks])
    return ok


def exact_det(m: np.ndarray) -> int:
    """Determinant of an integer matrix by fraction-free Bareiss elimination (python ints)."""
    a = [[int(v) for v in row] for row in m]
    n, sign, prev = len(a), 1, 1
    for k in range(n - 1):
        if a[k][k] == 0:
            swap = next((i for i in range(k + 1, n) if a[i][k] != 0), None)
            if swap is None:
                return 0
            a[k], a[swap], sign = a[swap], a[k], -sign
        for i in range(k + 1, n):
            for j in range(k + 1, n):
                a[i][j] = (a[i][j] * a[k][k] - a[i][k] * a[k][j]) // prev
        prev = a[k][k]
    return sign * a[n - 1][n - 1]


@pytest.fixture(scope="module")
def leech_reduced():
    """LLL-reduced integer basis of sqrt(8) * Leech and its Gram matrix at the unimodular scale."""
    reduced = lll_reduce(leech_basis(scaled=False))
    gram8 = reduced @ reduced.T
    assert (gram8 % 8 == 0).all()
    return reduced, gram8 // 8


# --------------------------------------------------------------------------------------------------
# E8

def test_e8_roots_facts():
    r = e8_roots()
    assert r.shape == (240, 8) and r.dtype == np.float64
    assert len({tuple(v) for v in r}) == 240
    np.testing.assert_array_equal((r * r).sum(axis=1), 2.0)
    ip = r @ r.T                                                   # exact: entries are multiples of 1/4
    for row in ip:
        values, counts = np.unique(row, return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist())) == {-2.0: 1, -1.0: 56, 0.0: 126, 1.0: 56, 2.0: 1}
    np.testing.assert_array_equal(r.T @ r, 60.0 * np.eye(8))
    doubled = 2 * r                                                # in E8: all-even or all-odd, sum = 0 mod 4
    assert (((doubled % 2) == (doubled[:, :1] % 2)).all(axis=1)).all()
    assert ((doubled.sum(axis=1) % 4) == 0).all()


def test_e8_nearest_root_matches_euclidean_argmin():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    roots = torch.tensor(e8_roots())
    want = torch.cdist(x, roots).argmin(dim=1)
    np.testing.assert_array_equal(e8_nearest_root(x).numpy(), want.numpy())
    assert e8_nearest_root(x.view(50, 10, 8)).shape == (50, 10)
    with pytest.raises(ValueError, match="last dim must be 8"):
        e8_nearest_root(torch.zeros(3, 7))


def e8_candidates(x: np.ndarray) -> np.ndarray:
    """Every E8 point within distance 1 of x (8,) (plus a few more): E8 has covering radius 1, so
    the nearest point has each coordinate within 1 of x; integer points from round(x) + {-1,0,1}^8 and
    half-integer points from round(x - 1/2) + 1/2 + {-1,0,1}^8, even coordinate sum."""
    offsets = np.array(list(itertools.product((-1, 0, 1), repeat=8)), dtype=np.float64)
    ints = np.round(x) + offsets
    halves = np.round(x - 0.5) + 0.5 + offsets
    cands = np.concatenate([ints, halves])
    return cands[np.isclose(cands.sum(axis=1) % 2, 0)]


def test_e8_lattice_nearest_is_the_true_nearest_point():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=3.0, size=(150, 8))
    got = e8_lattice_nearest(torch.as_tensor(x)).numpy()
    doubled = 2 * got                                              # membership of the answers
    assert np.allclose(doubled, np.round(doubled))
    assert ((np.round(doubled) % 2 == np.round(doubled[:, :1]) % 2).all(axis=1)).all()
    assert np.allclose(np.round(doubled).sum(axis=1) % 4, 0)
    for xi, gi in zip(x, got):
        cands = e8_candidates(xi)
        best = np.sqrt(((cands - xi) ** 2).sum(axis=1).min())
        assert best <= 1.0 + 1e-12                                 # covering radius: the box argument holds
        assert np.sqrt(((gi - xi) ** 2).sum()) == pytest.approx(best, abs=1e-12)
    assert e8_lattice_nearest(torch.zeros(4, 3, 8)).shape == (4, 3, 8)


def test_e8_lattice_nearest_fixes_lattice_points():
    pts = torch.tensor(e8_roots()) * torch.arange(1, 241, dtype=torch.float64)[:, None] % 7
    snapped = e8_lattice_nearest(pts)
    np.testing.assert_array_equal(e8_lattice_nearest(snapped).numpy(), snapped.numpy())
    np.testing.assert_array_equal(e8_lattice_nearest(torch.tensor(e8_roots())).numpy(), e8_roots())


# --------------------------------------------------------------------------------------------------
# Golay code

def test_golay_generator_structure():
    g = golay_generator()
    assert g.shape == (12, 24) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[:, :12], np.eye(12, dtype=np.uint8))
    b = g[:, 12:].astype(np.int64)
    a = 1 - b                                                      # the icosahedron: J - B
    np.testing.assert_array_equal(a, a.T)
    assert (np.diag(a) == 0).all() and (a.sum(axis=1) == 5).all()
    np.testing.assert_array_equal((b @ b.T) % 2, np.eye(12, dtype=np.int64))


def test_golay_weight_distribution():
    words = golay_codewords()
    assert words.shape == (4096, 24) and words.dtype == np.uint8
    assert len({w.tobytes() for w in words}) == 4096
    weights, counts = np.unique(words.sum(axis=1), return_counts=True)
    assert dict(zip(weights.tolist(), counts.tolist())) == {0: 1, 8: 759, 12: 2576, 16: 759, 24: 1}
    sums = (words[1:100, None, :] ^ words[None, :, :])              # closed under addition
    book = {w.tobytes() for w in words}
    assert all(s.tobytes() in book for s in sums.reshape(-1, 24))
    octads = golay_octads()
    assert octads.shape == (759, 8) and len({tuple(o) for o in octads}) == 759


# --------------------------------------------------------------------------------------------------
# Leech lattice

def test_hermite_normal_form_small_example():
    rows = [[2, 4, 4], [-6, 6, 12], [10, 4, 16], [4, 8, 8]]
    hnf = np.array(hermite_normal_form(rows))
    assert hnf.shape == (3, 3) and (np.tril(hnf, -1) == 0).all() and (np.diag(hnf) > 0).all()
    assert all(0 <= hnf[i, j] < hnf[j, j] for j in range(3) for i in range(j))   # reduced above pivots
    # same lattice: every input row is an integer combination of the HNF rows ...
    coeff = np.array(rows) @ np.linalg.inv(hnf)
    np.testing.assert_allclose(coeff, np.round(coeff), atol=1e-9)
    # ... and the index equals the gcd of the 3 x 3 minors of the input
    minors = [exact_det(np.array(rows)[list(c)]) for c in itertools.combinations(range(4), 3)]
    assert exact_det(hnf) == math.gcd(*minors)


def test_leech_basis_gram_integral_even_unimodular():
    basis = leech_basis(scaled=False)
    assert basis.shape == (24, 24)
    assert (np.tril(basis, -1) == 0).all() and (np.diag(basis) > 0).all()   # Hermite normal form
    assert in_leech_int(basis).all()
    gram8 = basis @ basis.T
    assert (gram8 % 8 == 0).all()                                  # integral after / sqrt(8)
    assert (np.diag(gram8) % 16 == 0).all()                        # even
    assert exact_det(basis) == 8 ** 12
    assert exact_det(gram8 // 8) == 1
    np.testing.assert_allclose(leech_basis(), basis / math.sqrt(8.0), rtol=0, atol=1e-15)


def test_leech_generating_set_lies_in_the_basis_lattice():
    basis = leech_basis(scaled=False)
    gens = [2 * golay_generator()[0].astype(np.int64), np.r_[-3, np.ones(23, dtype=np.int64)],
            np.r_[4, 4, np.zeros(22, dtype=np.int64)]]
    coeff = np.round(np.stack(gens) @ np.linalg.inv(basis)).astype(np.int64)
    np.testing.assert_array_equal(coeff @ basis, np.stack(gens))


def test_lll_keeps_the_lattice(leech_reduced):
    reduced, gram = leech_reduced
    change = np.round(reduced @ np.linalg.inv(leech_basis(scaled=False))).astype(np.int64)
    np.testing.assert_array_equal(change @ leech_basis(scaled=False), reduced)
    assert abs(exact_det(change)) == 1
    assert (np.diag(gram) == 4).all()                              # reduced down to minimal vectors


def test_fincke_pohst_matches_brute_force_on_small_lattices():
    # E8 (basis: D8 simple roots and (1/2)^8, doubled to integers): 120 pairs of norm 2
    e8 = np.array([[2, -2, 0, 0, 0, 0, 0, 0], [0, 2, -2, 0, 0, 0, 0, 0], [0, 0, 2, -2, 0, 0, 0, 0],
                   [0, 0, 0, 2, -2, 0, 0, 0], [0, 0, 0, 0, 2, -2, 0, 0], [0, 0, 0, 0, 0, 2, -2, 0],
                   [0, 0, 0, 0, 0, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert exact_det(e8) ** 2 == 4 ** 8
    found = short_vectors(e8 @ e8.T // 4, 2)
    assert len(found) == 120
    # a random 4-dim lattice against a box search
    rng = np.random.default_rng(3)
    b = rng.integers(-3, 4, size=(4, 4))
    while exact_det(b) == 0:
        b = rng.integers(-3, 4, size=(4, 4))
    gram = b @ b.T
    bound = int(np.sort(np.diag(gram))[1]) + 3
    got = {tuple(v) for v in short_vectors(lll_reduce(b) @ lll_reduce(b).T, bound) @ lll_reduce(b)}
    box = np.array(list(itertools.product(range(-12, 13), repeat=4))) @ b
    norms = (box ** 2).sum(axis=1)
    want = {tuple(v) for v in box[(norms <= bound) & (norms > 0)]}
    assert {max(v, tuple(-c for c in v)) for v in got} == {max(v, tuple(-c for c in v)) for v in want}
    assert len(got) * 2 == len(want)


def test_leech_has_no_vectors_of_norm_2(leech_reduced):
    _, gram = leech_reduced
    assert len(short_vectors(gram, 2)) == 0                        # nothing of norm 1 or 2 (norm is even)


def test_leech_enumeration_finds_exactly_the_196560_min_vectors(leech_reduced):
    reduced, gram = leech_reduced
    coeff = short_vectors(gram, 4)                                 # one of each +-pair
    norms = np.einsum("ki,ij,kj->k", coeff, gram, coeff)
    assert (norms == 4).all() and len(coeff) == 98280              # 196,560 vectors of norm 4
    vecs = coeff @ reduced
    enumerated = {v.tobytes() for v in np.concatenate([vecs, -vecs])}
    built = {v.tobytes() for v in leech_min_vectors(scaled=False).astype(np.int64)}
    assert enumerated == built


def test_leech_min_vectors_are_196560_distinct_lattice_vectors_of_norm_4():
    v = leech_min_vectors(scaled=False)
    assert v.shape == (196560, 24) and v.dtype == np.int8
    v64 = v.astype(np.int64)
    assert len(np.unique(v64, axis=0)) == 196560
    assert ((v64 ** 2).sum(axis=1) == 32).all()                    # norm 4 after / sqrt(8)
    basis = leech_basis(scaled=False)
    coeff = np.round(v64 @ np.linalg.inv(basis)).astype(np.int64)
    np.testing.assert_array_equal(coeff @ basis, v64)              # integer combinations, exactly
    shapes = np.sort(np.abs(v64), axis=1)[:, ::-1]
    assert (shapes[:, 0] == 4).sum() == 1104 and (shapes[:, 0] == 2).sum() == 97152
    assert (shapes[:, 0] == 3).sum() == 98304
    np.testing.assert_allclose(leech_min_vectors(), v / math.sqrt(8.0), rtol=0, atol=1e-6)


def test_third_shape_sign_rule():
    sample = leech_min_vectors(scaled=False)[-98304::997].astype(np.int64)
    assert in_leech_int(sample).all()
    wrong = sample.copy()
    pos = np.abs(wrong).argmax(axis=1)
    wrong[np.arange(len(wrong)), pos] *= -1                        # the 3 with the codeword's own sign
    assert not in_leech_int(wrong).any()


# --------------------------------------------------------------------------------------------------
# max cosine, resonance loss

def test_leech_max_cosine_equals_brute_force():
    blocks = torch.randn(100, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fast = leech_max_cosine(blocks)
    np.testing.assert_allclose(fast.numpy(), leech_max_cosine_bruteforce(blocks).numpy(), rtol=0, atol=1e-12)
    # blocks near each shape's vectors, with ties broken by small noise
    mins = torch.as_tensor(leech_min_vectors(scaled=False)[::4001].astype(np.float64))
    near = mins + 0.3 * torch.randn(mins.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    np.testing.assert_allclose(leech_max_cosine(near).numpy(), leech_max_cosine_bruteforce(near).numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(leech_max_cosine(mins).numpy(), 1.0, rtol=0, atol=1e-14)


def test_leech_max_cosine_float32_shapes_and_zero_block():
    blocks = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(6))
    out = leech_max_cosine(blocks)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), leech_max_cosine_bruteforce(blocks).numpy(), atol=2e-6)
    assert leech_max_cosine(torch.zeros(2, 24)).abs().max() == 0


def test_leech_nearest_min_vector_is_a_min_vector_attaining_the_max():
    blocks = torch.randn(64, 24, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    v = leech_nearest_min_vector(blocks) * math.sqrt(8.0)
    v_int = np.round(v.numpy()).astype(np.int64)
    np.testing.assert_allclose(v.numpy(), v_int, atol=1e-12)
    assert ((v_int ** 2).sum(axis=1) == 32).all() and in_leech_int(v_int).all()


def test_leech_max_cosine_gradient_is_that_of_the_argmax_cosine():
    blocks = torch.randn(20, 24, generator=torch.Generator().manual_seed(8), dtype=torch.float64,
                         requires_grad=True)
    leech_max_cosine(blocks).sum().backward()
    v = leech_nearest_min_vector(blocks.detach())
    b = blocks.detach()
    nb = b.norm(dim=1, keepdim=True)
    u = v / v.norm(dim=1, keepdim=True)
    want = u / nb - (b * u).sum(dim=1, keepdim=True) * b / nb ** 3   # d/db cos(b, v)
    np.testing.assert_allclose(blocks.grad.numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_leech_resonance_loss():
    hidden = torch.randn(2, 3, 48, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    loss = leech_resonance_loss(hidden, 0.5)
    want = 0.5 * (1 - leech_max_cosine_bruteforce(hidden.reshape(-1, 24)).mean())
    assert loss.shape == () and loss.item() == pytest.approx(want.item(), abs=1e-12)
    sub = leech_resonance_loss(hidden, 0.5, max_blocks=4)
    assert sub.item() != pytest.approx(loss.item(), abs=1e-9)       # a different (sub)set of blocks
    with pytest.raises(ValueError, match="not a multiple of 24"):
        leech_resonance_loss(torch.zeros(2, 50), 0.1)


# --------------------------------------------------------------------------------------------------
# weight telemetry

def test_weight_telemetry_figures():
    u = torch.randn(6, 1, generator=torch.Generator().manual_seed(10))
    assert stable_rank(u @ u.T) == pytest.approx(1.0, rel=1e-5)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(11)))
    assert stable_rank(q) == pytest.approx(8.0, rel=1e-5)
    assert condition_number(torch.diag(torch.tensor([4.0, 2.0, 0.5]))) == pytest.approx(8.0)
    assert condition_number(torch.zeros(3, 3)) == math.inf
    w = torch.diag(torch.tensor([1.0, 2.0]))
    assert spectral_resonance(w) == pytest.approx((math.sin(137.036) + math.sin(274.072)) / 2, abs=1e-5)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    tele = weight_telemetry(model)
    assert set(tele) == {f"{i}.weight.{k}" for i in (0, 2)
                         for k in ("stable_rank", "condition_number", "spectral_resonance")}
    assert tele["0.weight.stable_rank"] == pytest.approx(stable_rank(model[0].weight))
    with pytest.raises(ValueError, match="2-D"):
        stable_rank(torch.zeros(3))
