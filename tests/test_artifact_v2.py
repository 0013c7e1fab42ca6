"""Artifact format 2 (issue 18): the new schemes roundtrip exactly through the file, role streams
and per-group best codec, version 1 kept for version-1 content, the committed record still scores."""
import hashlib
from pathlib import Path

import pytest
import torch

from lila_golf.core.artifact import load_artifact, quantized_state, read_artifact_header, save_artifact

TOK = hashlib.sha256(b"tokenizer").hexdigest()
REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "records" / "track_cpu_10min" / "2026-11-23_BigramXSA_LeakyD192x5"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_like():
    g = torch.Generator().manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(300, 128, generator=g) * 0.02,
          "bigram.embed.weight": torch.randn(64, 32, generator=g) * 0.02,
          "blocks.0.attn.c_q.weight": torch.randn(128, 128, generator=g) * 0.05,
          "blocks.0.mlp.fc.weight": torch.randn(256, 128, generator=g) * 0.05,
          "blocks.0.mlp.proj.weight": torch.randn(128, 256, generator=g) * 0.05,
          "blocks.0.attn_scale": torch.rand(128, generator=g),
          "steps_done": torch.tensor([7], dtype=torch.int64)}
    X = torch.randn(1024, 128, generator=g)
    X2 = torch.randn(1024, 256, generator=g)
    H = {"tok_emb.weight": X.T @ X, "blocks.0.attn.c_q.weight": X.T @ X, "blocks.0.mlp.fc.weight": X.T @ X,
         "blocks.0.mlp.proj.weight": X2.T @ X2}
    rw = {k: torch.rand(v.shape[0], generator=g) + 0.1 for k, v in sd.items() if v.ndim == 2}
    plan = {"tok_emb.weight": "int7_sdgptq_k14+hlqer4", "bigram.embed.weight": "int6_fs_k10",
            "blocks.0.attn.c_q.weight": "int5_fsgptq_k9+awq16", "blocks.0.mlp.fc.weight": "int6_sdgptq_k11.5+lqer2",
            "blocks.0.mlp.proj.weight": "int4_lite+awq8", "blocks.0.attn_scale": "fp32", "steps_done": "raw"}
    return sd, H, rw, plan


@pytest.mark.parametrize("codec,streams", [("brotli", "role"), ("rans", "bits"), ("best", "role"), ("lzma", "bits")])
def test_new_schemes_roundtrip_exactly_through_the_file(tmp_path, model_like, codec, streams):
    sd, H, rw, plan = model_like
    path = tmp_path / "m.lgz"
    n = save_artifact(path, sd, model_config={"x": 1}, tokenizer_sha256=TOK, codec=codec, hessians=H,
                      plan=plan, row_weights=rw, streams=streams)
    loaded, header = load_artifact(path, tokenizer_sha256=TOK)
    expected = quantized_state(sd, "int6_gptq", H, plan, row_weights=rw)
    for k in sd:
        assert torch.equal(loaded[k], expected[k]), k
    assert header["version"] == 2 and n == path.stat().st_size
    assert {t["name"]: t["scheme"] for t in header["tensors"]} == plan
    groups = {g["name"] for g in header["groups"]}
    if streams == "role":
        assert {"sym7.embed", "sym6.embed", "sym5.attn", "sym6.mlp", "sym2.embed", "sym4.mlp"} <= groups
    else:
        assert {"sym7", "sym6", "sym5", "sym4", "sym2", "sym8"} <= groups
    if codec == "best":
        assert {g["codec"] for g in header["groups"]} <= {"rans", "zlib", "lzma", "zstd", "brotli"}


def test_best_codec_is_no_larger_than_any_single_codec(tmp_path, model_like):
    sd, H, rw, plan = model_like
    sizes = {}
    for codec in ("best", "brotli", "lzma", "rans"):
        sizes[codec] = save_artifact(tmp_path / codec, sd, model_config={}, tokenizer_sha256=TOK, codec=codec,
                                     hessians=H, plan=plan, row_weights=rw, streams="role")
    # the header names each group's codec, so it differs by a few bytes per group
    assert sizes["best"] <= min(sizes.values()) + 64


def test_fallbacks_without_hessian_or_row_weights(model_like):
    sd, _, _, plan = model_like
    from lila_golf.core.artifact import quantize_state
    entries = quantize_state(sd, "int6_gptq", None, plan)
    assert entries["tok_emb.weight"]["scheme"] == "int7_sd_k14+lqer4"
    assert entries["bigram.embed.weight"]["scheme"] == "int6_sd_k10"
    assert entries["blocks.0.attn.c_q.weight"]["scheme"] == "int5_sd_k9+awq16"


def test_version_1_content_is_still_written_as_version_1(tmp_path, model_like):
    sd = {k: v for k, v in model_like[0].items()}
    n = save_artifact(tmp_path / "v1", sd, model_config={}, tokenizer_sha256=TOK, scheme="int6_lite", codec="zlib")
    assert read_artifact_header(tmp_path / "v1")["version"] == 1
    assert (tmp_path / "v1").read_bytes()[8:10] == b"\x01\x00" and n > 0
    with pytest.raises(ValueError, match="unknown artifact streams"):
        save_artifact(tmp_path / "x", sd, model_config={}, tokenizer_sha256=TOK, streams="rows")


def test_unknown_version_is_refused(tmp_path, model_like):
    from lila_golf.core.artifact import ArtifactError
    path = tmp_path / "m"
    save_artifact(path, model_like[0], model_config={}, tokenizer_sha256=TOK, scheme="int8", codec="zlib")
    data = bytearray(path.read_bytes())
    data[8:10] = (3).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="unsupported artifact format version 3"):
        load_artifact(path)


# made with main's code before issue 18 (format 1 reader): sha256 over (name, float32 bytes) of every
# loaded tensor, sorted by name; and seed 1's score on the first 32,768 val-head targets
RECORD_STATE_SHA256 = {1: "f92c70bc2fc770ff9d9104266ac0075ec276585e5fa485a54bcb2f174315102a",
                       2: "06e8079648ea0a6b21568b20746ff7a8c59b904f7a9c5cf21d8f9ce7ce646bb6",
                       3: "61807e581a62d34eccafa11dc8fa932195891767882dc5c80bba13c300fdce13"}
RECORD_SEED1_HEAD = {"val_loss": 3.8166248202323914, "val_bpb": 2.2096652187656187, "tokens": 32768, "bytes": 81654}


@pytest.mark.skipif(not RECORD.is_dir(), reason="the committed CPU-track record is not in this checkout")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_committed_record_artifacts_load_bit_for_bit_as_before(seed):
    state, header = load_artifact(RECORD / f"final_model_seed{seed}.int8.zlib.lgz")
    assert header["version"] == 1
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    assert h.hexdigest() == RECORD_STATE_SHA256[seed]


@pytest.mark.skipif(not RECORD.is_dir(), reason="the committed CPU-track record is not in this checkout")
def test_committed_record_artifact_scores_as_before(shared_data):
    """Seed 1 scores the first 32,768 val-head targets exactly as main's code did (the whole head
    matches the log to 4e-8: benchmarks/RESULTS.md, issue 5)."""
    from lila_golf.core.data import build_byte_tables, load_tokenizer, load_val_tokens, shard_file, target_bytes, tokenizer_sha256
    from lila_golf.core.evaluate import eval_val_plain
    from lila_golf.core.model import GPT, GPTConfig
    tokenizer = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    state, header = load_artifact(RECORD / "final_model_seed1.int8.zlib.lgz", tokenizer_sha256=tokenizer_sha256(tokenizer))
    model = GPT(GPTConfig(**header["model_config"]))
    model.load_state_dict(state)
    tokens = load_val_tokens(shard_file(shared_data / "fineweb10B_sp1024_mini", "val"), 1024).astype("int64")[:32769]
    tables = build_byte_tables(load_tokenizer(str(tokenizer)), 1024)
    res = eval_val_plain(model, tokens, target_bytes(tokens[:-1], tokens[1:], tables), 256, torch.device("cpu"), batch_seqs=32)
    assert res["tokens"] == RECORD_SEED1_HEAD["tokens"] and res["bytes"] == RECORD_SEED1_HEAD["bytes"]
    assert abs(res["val_bpb"] - RECORD_SEED1_HEAD["val_bpb"]) < 1e-9
    assert "val_bpb:2.23665216" in (RECORD / "train_seed1.log").read_text()
