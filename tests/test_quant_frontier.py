"""Issue 18 quantisers: SDClip, any bit width, Fisher-shaped steps, LQER, AWQ-lite, the small-tensor
rule by bytes. Each against the reference facts or the simpler scheme at equal bits (zero-order
entropy of every symbol array plus 16 bits a stored scale)."""
import math

import numpy as np
import pytest
import torch

from lila_golf.core.bitalloc import plan_by_bytes
from lila_golf.core.quant import (dequantize_tensor, lqer_factors, lqer_product, parse_spec, quant_role,
                                  quantize_tensor, symbol_entropy_bits)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYMBOL_KEYS = ("q", "awq_q", "lqer_a", "lqer_b")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def rate_bits(entry) -> float:
    """H0 of each symbol array (its own statistics) + 16 bits per fp16 scale."""
    bits = 0.0
    for key, arr in entry["arrays"].items():
        if key in SYMBOL_KEYS:
            bits += symbol_entropy_bits(arr)
        elif arr.dtype == np.float16:
            bits += 16 * arr.size
    return bits


def out_err(w, entry, H):
    d = w - dequantize_tensor(entry)
    return float(((d @ H) * d).sum())


def match_rate(make, target_bits, lo=0.5, hi=60.0, steps=40):
    """The entry of make(k) whose rate is closest to target_bits from below (rate falls with k)."""
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if rate_bits(make(mid)) > target_bits:
            lo = mid
        else:
            hi = mid
    return make(hi)


def test_scheme_grammar():
    assert parse_spec("int6_sdgptq_k12.85+hlqer4+awq64") == {
        "kind": "sdgptq", "bits": 6, "k": 12.85, "lqer": 4, "lqer_h": True, "awq": 64}
    assert parse_spec("int6_gptq")["k"] is None
    for bad in ("int6_sd", "int6_gptq_k3", "int9_sd_k3", "int6_sd_k3+awq0", "int6_sd_k3+awq8+lqer4"):
        with pytest.raises(ValueError, match="unknown quantisation scheme"):
            parse_spec(bad)
    assert [quant_role(n) for n in ("blocks.0.attn.c_q.weight", "blocks.3.mlp.fc.weight", "tok_emb.weight",
                                    "bigram.embed.weight", "bigram.proj.weight")] == ["attn", "mlp", "embed", "embed", "other"]


@pytest.mark.parametrize("bits", [5, 6, 7, 8])
@pytest.mark.parametrize("k", [8.0, 12.85, 16.0])
def test_sdclip_entropy_of_gaussian_rows_is_b_minus_log2k_plus_1p05(bits, k):
    w = torch.randn(256, 1024, generator=_gen(bits)) * 0.03
    e = quantize_tensor(w, f"int{bits}_sd_k{k}")
    h = symbol_entropy_bits(e["arrays"]["q"]) / w.numel()
    assert abs(h - (bits - math.log2(k) + 1.05)) < 0.1, h


def test_sdclip_scale_is_k_std_over_clip_range():
    w = torch.randn(16, 512, generator=_gen(1)) * torch.linspace(0.01, 0.1, 16)[:, None]
    e = quantize_tensor(w, "int6_sd_k12.85")
    expected = (12.85 * w.std(dim=1, correction=0) / 31).half()
    assert np.array_equal(e["arrays"]["scale"], expected.numpy())


def test_sdclip_beats_absmax_scaling_at_equal_entropy_on_heavy_tailed_rows():
    t = torch.distributions.StudentT(3.0).sample((128, 512)) * 0.02  # trained weights have tails
    sd = quantize_tensor(t, "int8_sd_k20")
    qmax = 127

    def absmax_entry(c):  # step = c * absmax / qmax per row: no clipping, the plain rule
        s = (c * t.abs().amax(1) / qmax).half()
        q = torch.clamp(torch.round(t / s.float()[:, None]), -qmax, qmax).to(torch.int8)
        return {"scheme": "int8_lite", "shape": list(t.shape), "dtype": "float32",
                "arrays": {"q": q.numpy(), "scale": s.numpy()}}
    plain = match_rate(absmax_entry, rate_bits(sd))
    assert rate_bits(plain) <= rate_bits(sd)
    mse_sd = float((t - dequantize_tensor(sd)).pow(2).sum())
    mse_plain = float((t - dequantize_tensor(plain)).pow(2).sum())
    assert mse_sd < 0.9 * mse_plain, (mse_sd, mse_plain)


@pytest.mark.parametrize("method", ["sd", "sdgptq"])
def test_every_bit_width_2_to_8_roundtrips_and_more_bits_lower_error(method):
    w = torch.randn(32, 256, generator=_gen(2)) * 0.05
    X = torch.randn(1024, 256, generator=_gen(3))
    errs = []
    for bits in range(2, 9):
        e = quantize_tensor(w, f"int{bits}_{method}_k4", H=X.T @ X)
        assert np.abs(e["arrays"]["q"]).max() <= 2 ** (bits - 1) - 1
        errs.append(float((w - dequantize_tensor(e)).pow(2).sum()))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs


def test_gptq_with_sdclip_scales_beats_round_to_nearest_at_equal_scales():
    g = _gen(4)
    X = torch.randn(2048, 256, generator=g) @ (torch.randn(256, 256, generator=g) / 16)
    H, w = X.T @ X, torch.randn(128, 256, generator=g) * 0.05
    rtn, gptq = quantize_tensor(w, "int6_sd_k12.85"), quantize_tensor(w, "int6_sdgptq_k12.85", H=H)
    assert np.array_equal(rtn["arrays"]["scale"], gptq["arrays"]["scale"])
    assert rate_bits(gptq) < 1.03 * rate_bits(rtn)
    assert out_err(w, gptq, H) < 0.7 * out_err(w, rtn, H)


def test_fisher_shaped_steps_beat_sdclip_at_equal_entropy_on_loss_weighted_error():
    g = _gen(5)
    w = torch.randn(256, 256, generator=g) * 0.05
    row_w = torch.exp(torch.randn(256, generator=g) * 1.5)  # output sensitivities spread ~100x
    sd = quantize_tensor(w, "int8_sd_k24")
    fs = match_rate(lambda k: quantize_tensor(w, f"int8_fs_k{k:.6g}", row_weight=row_w), rate_bits(sd))
    assert rate_bits(fs) <= rate_bits(sd)

    def weighted(e):
        return float((row_w * (w - dequantize_tensor(e)).pow(2).sum(1)).sum())
    assert weighted(fs) < 0.8 * weighted(sd), (weighted(fs), weighted(sd))
    with pytest.raises(ValueError, match="needs row_weight"):
        quantize_tensor(w, "int8_fs_k3")


def test_lqer_repairs_clipped_outliers_cheaper_than_the_same_scheme_at_equal_bits():
    # the record's use: a fixed-width SDClip scheme clips a few outlier input columns of some
    # tensors; rank-4 LQER repairs that error for fewer bits than any k of the same int6 scheme
    g = _gen(6)
    w = torch.randn(256, 256, generator=g) * 0.02
    w[:, :3] *= 25  # a few outlier input columns: SDClip clips them, the error is low rank
    H = torch.eye(256)
    with_lqer = quantize_tensor(w, "int6_sd_k6+lqer4")
    assert with_lqer["arrays"]["lqer_a"].shape == (256, 4) and np.abs(with_lqer["arrays"]["lqer_a"]).max() <= 1
    assert with_lqer["arrays"]["lqer_b"].shape == (4, 256) and np.abs(with_lqer["arrays"]["lqer_b"]).max() <= 7
    assert with_lqer["arrays"]["lqer_as"].shape == (1,) and with_lqer["arrays"]["lqer_bs"].shape == (4, 4)
    plain = match_rate(lambda k: quantize_tensor(w, f"int6_sd_k{k:.6g}"), rate_bits(with_lqer))
    assert rate_bits(plain) <= rate_bits(with_lqer)
    assert out_err(w, with_lqer, H) < 0.7 * out_err(w, plain, H), (out_err(w, with_lqer, H), out_err(w, plain, H))


def test_lqer_factors_reconstruct_a_low_rank_matrix_and_check_shapes():
    g = _gen(7)
    E = torch.randn(64, 2, generator=g) @ torch.randn(2, 100, generator=g)
    arrays = lqer_factors(E, 2)
    approx = lqer_product(arrays, 100)
    # ternary A loses ~19% of a Gaussian vector's energy (rel. error ~0.44); int4 B a little more
    assert float((E - approx).norm() / E.norm()) < 0.5
    with pytest.raises(ValueError, match="do not make"):
        lqer_product(arrays, 99)


def test_awq_lite_protects_salient_columns_at_equal_bits():
    g = _gen(8)
    X = torch.randn(4096, 128, generator=g)
    X[:, 5:13] *= 30  # 8 salient input channels
    H, w = X.T @ X, torch.randn(64, 128, generator=g) * 0.05
    awq = quantize_tensor(w, "int4_sdgptq_k4+awq8", H=H)
    assert sorted(awq["arrays"]["awq_cols"].tolist()) == list(range(5, 13))
    assert awq["arrays"]["q"].shape == (64, 120) and awq["arrays"]["awq_q"].shape == (64, 8)
    plain = match_rate(lambda k: quantize_tensor(w, f"int8_sdgptq_k{k:.6g}", H=H), rate_bits(awq))
    assert rate_bits(plain) <= rate_bits(awq)
    assert out_err(w, awq, H) < 0.7 * out_err(w, plain, H), (out_err(w, awq, H), out_err(w, plain, H))


def test_awq_lite_without_gptq_roundtrips():
    w = torch.randn(16, 64, generator=_gen(9))
    e = quantize_tensor(w, "int6_lite+awq4")
    back = dequantize_tensor(e)
    assert back.shape == w.shape and float((w - back).norm() / w.norm()) < 0.05


def test_small_tensor_rule_counts_bytes_not_elements():
    d192 = torch.randn(192, 192)  # 36,864 elements: the element rule (<= 65,536) kept it fp16
    assert plan_by_bytes("blocks.0.attn.c_q.weight", d192, "int6_gptq") == "int6_gptq"
    assert plan_by_bytes("blocks.0.attn.c_q.weight", torch.randn(16, 16), "int6_gptq") == "fp16"
    assert plan_by_bytes("blocks.0.attn_scale", torch.randn(192), "int6_gptq") == "fp32"
    assert plan_by_bytes("skip_weights", torch.randn(2, 192), "int6_gptq") == "fp16"
    assert plan_by_bytes("steps", torch.tensor([3]), "int6_gptq") == "raw"
