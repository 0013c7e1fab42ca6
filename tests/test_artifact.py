"""Artifact container: exact disk roundtrip for every scheme x codec, and clear errors."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

import lila_golf.core.artifact as artifact_mod
from lila_golf.core.artifact import (ARTIFACT_CODECS, ArtifactError, load_artifact, quantized_state,
                                read_artifact_header, save_artifact)

TOK = hashlib.sha256(b"tokenizer").hexdigest()
CONFIG = {"num_layers": 1, "model_dim": 64, "vocab_size": 300}

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def state_and_hessians():
    """A small GPT-shaped state dict with every tensor kind, and Hessians for two matrices."""
    g = torch.Generator().manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(300, 256, generator=g) * 0.02,
          "blocks.0.attn.c_q.weight": torch.randn(256, 256, generator=g) * 0.05,
          "blocks.0.mlp.fc.weight": torch.randn(320, 256, generator=g) * 0.05,
          "blocks.0.mlp.proj.weight": torch.randn(256, 320, generator=g) * 0.05,  # no Hessian: lite
          "blocks.0.attn_scale": torch.rand(64, generator=g),
          "blocks.0.norm.weight": torch.rand(64, generator=g).bfloat16(),
          "steps_done": torch.tensor([7], dtype=torch.int64), "scalar_gain": torch.tensor(0.5)}
    X = torch.randn(1024, 256, generator=g) @ (torch.randn(256, 256, generator=g) / 16)
    H = {"blocks.0.attn.c_q.weight": X.T @ X, "blocks.0.mlp.fc.weight": X.T @ X}
    return sd, H


def _save(path, sd, H, scheme="int8", codec="zlib"):
    return save_artifact(path, sd, model_config=CONFIG, tokenizer_sha256=TOK, scheme=scheme,
                         codec=codec, hessians=H)


@pytest.mark.parametrize("scheme", ["int8", "int6_lite", "int6_gptq", "fp16"])
@pytest.mark.parametrize("codec", ARTIFACT_CODECS)
def test_disk_roundtrip_equals_in_memory_quantisation_exactly(tmp_path, state_and_hessians, scheme, codec):
    sd, H = state_and_hessians
    path = tmp_path / "model.lgz"
    n = _save(path, sd, H, scheme, codec)
    assert n == path.stat().st_size
    loaded, header = load_artifact(path, tokenizer_sha256=TOK)
    expected = quantized_state(sd, scheme, H)
    assert set(loaded) == set(sd) and header["model_config"] == CONFIG
    for k in sd:
        assert torch.equal(loaded[k], expected[k]), k
        assert loaded[k].shape == sd[k].shape
    assert loaded["steps_done"].dtype == torch.int64 and loaded["tok_emb.weight"].dtype == torch.float32
    schemes = {t["name"]: t["scheme"] for t in header["tensors"]}
    if scheme == "int6_gptq":
        assert schemes["blocks.0.mlp.fc.weight"] == "int6_gptq"
        assert schemes["blocks.0.mlp.proj.weight"] == "int6_lite"  # no Hessian given
    assert read_artifact_header(path)["file_bytes"] == n


def test_quantised_weights_are_close_to_the_originals(state_and_hessians):
    sd, H = state_and_hessians
    q = quantized_state(sd, "int6_gptq", H)
    for k, v in sd.items():
        if v.is_floating_point():
            assert (q[k] - v.float()).norm() <= 0.05 * v.float().norm(), k
    assert torch.equal(q["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])  # control: fp32


def test_header_is_cheap_and_reports_sizes(tmp_path, state_and_hessians):
    sd, H = state_and_hessians
    path = tmp_path / "m.lgz"
    _save(path, sd, H, "int6_lite", "rans")
    h = read_artifact_header(path)
    assert h["tokenizer_sha256"] == TOK and h["codec"] == "rans" and h["scheme"] == "int6_lite"
    assert {g["name"]: g["codec"] for g in h["groups"]} == {"sym6": "rans", "sym8": "rans", "scale": "lzma", "float": "lzma"}
    assert h["num_params"] == sum(v.numel() for v in sd.values())
    assert 0 < h["sym_coded_bytes"] <= 1.01 * h["sym_h0_bits"] / 8
    assert h["file_bytes"] == h["header_bytes"] + h["payload_bytes"] + 32


def _error_for(path) -> str:
    with pytest.raises(ArtifactError) as exc:
        load_artifact(path, tokenizer_sha256=TOK)
    assert str(path) in str(exc.value)
    return str(exc.value)


def test_corruption_truncation_foreign_and_tokenizer_errors(tmp_path, state_and_hessians):
    sd, H = state_and_hessians
    path = tmp_path / "good.lgz"
    _save(path, sd, H, "int6_lite", "lzma")
    data = path.read_bytes()
    flipped = tmp_path / "flipped.lgz"
    flipped.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])  # inside the payload
    assert "checksum" in _error_for(flipped)
    short = tmp_path / "short.lgz"
    short.write_bytes(data[:-1000])
    assert "truncated" in _error_for(short)
    tiny = tmp_path / "tiny.lgz"
    tiny.write_bytes(data[:20])
    assert "truncated" in _error_for(tiny)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"PK\x03\x04" + data[4:])
    assert "bad magic" in _error_for(foreign)
    assert "bad magic" in _error_for_header(foreign)
    with pytest.raises(ArtifactError, match="tokenizer mismatch"):
        load_artifact(path, tokenizer_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.lgz")
    load_artifact(path)  # no tokenizer given: no check


def _error_for_header(path) -> str:
    with pytest.raises(ArtifactError) as exc:
        read_artifact_header(path)
    return str(exc.value)


def test_corrupt_group_with_valid_checksum_is_still_caught(tmp_path, state_and_hessians):
    """A writer bug (bad payload, checksum recomputed) must fail as ArtifactError, not deep inside numpy."""
    sd, H = state_and_hessians
    path = tmp_path / "m.lgz"
    _save(path, sd, H, "int8", "rans")
    data = path.read_bytes()
    hlen = int.from_bytes(data[10:14], "little")
    header = json.loads(data[14:14 + hlen])
    sym = next(g for g in header["groups"] if g["name"] == "sym8")
    body = bytearray(data[:-32])
    body[14 + hlen + sym["offset"] + sym["length"] // 2] ^= 0x55
    path.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(ArtifactError, match="does not decode"):
        load_artifact(path)


def test_bad_arguments_are_clear(tmp_path, state_and_hessians):
    sd, _ = state_and_hessians
    with pytest.raises(ValueError, match="unknown artifact codec"):
        save_artifact(tmp_path / "x", sd, model_config={}, tokenizer_sha256=TOK, codec="rar")
    with pytest.raises(ValueError, match="JSON"):
        save_artifact(tmp_path / "x", sd, model_config={"f": object()}, tokenizer_sha256=TOK)
    with pytest.raises(ValueError, match="unknown quantisation scheme"):
        save_artifact(tmp_path / "x", sd, model_config={}, tokenizer_sha256=TOK, scheme="int3")


def test_plan_overrides_per_tensor(tmp_path, state_and_hessians):
    sd, H = state_and_hessians
    plan = {"tok_emb.weight": "int6_lite"}
    _save_plan = save_artifact(tmp_path / "p.lgz", sd, model_config={}, tokenizer_sha256=TOK,
                               scheme="int8", plan=plan)
    schemes = {t["name"]: t["scheme"] for t in read_artifact_header(tmp_path / "p.lgz")["tensors"]}
    assert _save_plan > 0 and schemes["tok_emb.weight"] == "int6_lite"
    loaded, _ = load_artifact(tmp_path / "p.lgz")
    assert torch.equal(loaded["tok_emb.weight"], quantized_state(sd, "int8", None, plan)["tok_emb.weight"])


@pytest.mark.parametrize("module", ["artifact", "quant", "codec"])
def test_no_pickle_anywhere(module):
    src = Path(artifact_mod.__file__).with_name(f"{module}.py").read_text()
    for banned in ("import pickle", "pickle.", "torch.load", "np.load", "allow_pickle", "import dill"):
        assert banned not in src, banned


def test_malformed_header_with_valid_checksum_is_an_artifact_error(tmp_path, state_and_hessians):
    sd, H = state_and_hessians
    path = tmp_path / "m.lgz"
    _save(path, sd, H, "int8", "zlib")
    data = path.read_bytes()
    hlen = int.from_bytes(data[10:14], "little")
    header = json.loads(data[14:14 + hlen])
    header["tensors"][0]["arrays"][0]["dtype"] = "not-a-dtype"
    hb = json.dumps(header).encode()
    body = data[:10] + len(hb).to_bytes(4, "little") + hb + data[14 + hlen:-32]
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ArtifactError, match="malformed"):
        load_artifact(path)
