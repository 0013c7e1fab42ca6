"""Lattice vector quantisation of weights (lila_golf/research/latticevq.py): exact symbol packing and the E8
granular gain over per-coordinate rounding."""
import numpy as np
import pytest
import torch

from lila_golf.research.latticevq import e8_lattice_nearest
from lila_golf.research.latticevq import e8_pack, e8_unpack, vq_dequantize, vq_quantize


def _column_entropy_bits(a: np.ndarray) -> float:
    """Sum over columns of each column's zero-order entropy (bits per row)."""
    a = a.reshape(a.shape[0], -1)
    total = 0.0
    for col in a.T:
        _, counts = np.unique(col, return_counts=True)
        p = counts / counts.sum()
        total += float(-(p * np.log2(p)).sum())
    return total


def test_e8_pack_roundtrip_is_exact():
    g = torch.Generator().manual_seed(0)
    points = e8_lattice_nearest(torch.randn(5000, 8, generator=g, dtype=torch.float64) * 7)
    assert (points[:, 0] % 1 != 0).any() and (points[:, 0] % 1 == 0).any()  # both cosets occur
    ints, cosets = e8_pack(points)
    assert torch.equal(e8_unpack(ints, cosets), points)


def test_e8_pack_rejects_points_off_the_lattice():
    with pytest.raises(ValueError, match="not on the E8 lattice"):
        e8_pack(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64))


def test_vq_reconstruction_is_the_scaled_nearest_point():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 64, generator=g) * torch.linspace(0.1, 2.0, 12)[:, None]
    for lattice in ("z8", "e8"):
        q = vq_quantize(w, lattice, step=0.3)
        scale = q["scale"].double()[:, None]
        x = w.double() / scale
        nearest = x.round() if lattice == "z8" else e8_lattice_nearest(x.reshape(12, 8, 8)).reshape(12, 64)
        assert torch.allclose(vq_dequantize(q, lattice).double(), (nearest * scale).float().double())
    with pytest.raises(ValueError, match="multiple of 8"):
        vq_quantize(torch.zeros(4, 12), "e8", 0.3)
    with pytest.raises(ValueError, match="lattice"):
        vq_quantize(torch.zeros(4, 16), "d4", 0.3)


def test_e8_has_its_granular_gain_at_equal_rate():
    # high rate on Gaussian weights: same covolume -> same bits, and the mean squared error ratio is
    # the ratio of normalised second moments 0.0717 / 0.0833 = 0.861 (0.65 dB)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(256, 1024, generator=g)
    errs, bits = {}, {}
    for lattice in ("z8", "e8"):
        q = vq_quantize(w, lattice, step=0.05)
        errs[lattice] = (vq_dequantize(q, lattice) - w).pow(2).mean().item()
        blocks = q["symbols"][0].reshape(-1, 8)
        bits[lattice] = _column_entropy_bits(blocks) + (_column_entropy_bits(q["symbols"][1].reshape(-1, 1))
                                                        if lattice == "e8" else 0.0)
    assert 0.84 < errs["e8"] / errs["z8"] < 0.88
    assert abs(bits["e8"] - bits["z8"]) / 8 < 0.05  # bits per weight
