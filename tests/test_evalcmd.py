"""eval command: run folders and artifacts, plain-equivalence at stride = seq_len, clear refusals,
every scorer name, and the model scorers registered with the audit."""
import json

import numpy as np
import pytest
import torch

from lila_golf.tools import audit
from lila_golf.core.artifact import save_artifact
from lila_golf.core.data import build_byte_tables, load_tokenizer, read_shard, target_bytes, tokenizer_sha256, write_shard
from lila_golf.tools.evalcmd import EVAL_SCORERS, build_scorer_factory, evaluate_tokens, main
from lila_golf.core.evaluate import eval_val_plain
from lila_golf.tools.generate import load_model
from lila_golf.core.model import GPT, GPTConfig

TINY = dict(vocab_size=1024, num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)
SEQ_LEN = 32
N_TOKENS = 3000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    with torch.no_grad():  # untrained weights give near-uniform logits: spread them out
        model.tok_emb.weight.normal_(0, 0.3)
        for p in model.parameters():
            if p.ndim == 2 and p is not model.tok_emb.weight:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sp1024_model, mini_data):
    """A run folder as training leaves it: artifact, config.json, and (here) its own small val shard."""
    folder = tmp_path_factory.mktemp("run")
    model = tiny_model()
    save_artifact(folder / "final_model.int8.zlib.lgz", {k: v.float() for k, v in model.state_dict().items()},
                  model_config=model.cfg.__dict__, tokenizer_sha256=tokenizer_sha256(sp1024_model),
                  scheme="int8", codec="zlib")
    data = folder / "data"
    data.mkdir()
    write_shard(data / "fineweb_val_000000.bin", read_shard(mini_data / "fineweb_val_000000.bin")[:N_TOKENS])
    config = {"data_path": str(data), "tokenizer_path": str(sp1024_model), "train_seq_len": SEQ_LEN}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def results_line(out: str) -> dict:
    line = next(l for l in out.splitlines() if l.startswith("val_loss:"))
    return {k: float(v.removesuffix("ms")) if k != "data" else v for k, v in (kv.split(":", 1) for kv in line.split())}


@torch.no_grad()
def plain_float64(model, tokens):
    """eval_val_plain's windows (non-overlapping, last one shorter), log-softmax in float64."""
    nll, x = 0.0, torch.from_numpy(tokens)
    for s in range(0, len(tokens) - 1, SEQ_LEN):
        n = min(SEQ_LEN, len(tokens) - 1 - s)
        lsm = model(x[None, s:s + n])[0].double().log_softmax(-1)
        nll -= float(lsm.gather(1, x[s + 1:s + 1 + n, None]).sum())
    return nll / (len(tokens) - 1)


def test_stride_equal_seq_len_equals_plain_evaluation(run_dir, sp1024_model):
    model, _ = load_model(run_dir / "final_model.int8.zlib.lgz", sp1024_model)
    tokens = read_shard(run_dir / "data" / "fineweb_val_000000.bin").astype(np.int64)
    tables = build_byte_tables(load_tokenizer(sp1024_model))
    plain = eval_val_plain(model, tokens, target_bytes(tokens[:-1], tokens[1:], tables), SEQ_LEN, "cpu")
    factory = build_scorer_factory("model", model, seq_len=SEQ_LEN, stride=SEQ_LEN, vocab_size=1024)
    ours = evaluate_tokens(factory, tokens, tables, chunk_size=8 * SEQ_LEN)
    assert (ours["tokens"], ours["bytes"]) == (plain["tokens"], plain["bytes"]) == (N_TOKENS - 1, ours["bytes"])
    # eval_val_plain sums float32 cross-entropies (relative precision ~1e-8); the same windows with the
    # log-softmax in float64 must agree to 1e-9
    assert abs(ours["val_loss"] - plain["val_loss"]) < 1e-6 * plain["val_loss"]
    assert abs(ours["val_loss"] - plain_float64(model, tokens)) < 1e-9
    sliding = evaluate_tokens(build_scorer_factory("model", model, seq_len=SEQ_LEN, stride=16, vocab_size=1024),
                              tokens, tables, chunk_size=8 * SEQ_LEN)
    assert sliding["bytes"] == plain["bytes"] and sliding["val_loss"] != plain["val_loss"]  # other windows


def test_cli_run_folder_prints_the_keys(run_dir, capsys):
    assert main([str(run_dir), "--stride", str(SEQ_LEN), "--quiet"]) == 0
    out = capsys.readouterr().out
    res = results_line(out)
    assert set(res) >= {"val_loss", "val_bpb", "tokens", "bytes", "tokens_per_s"}
    assert res["tokens"] == N_TOKENS - 1 and "val_subset" not in out and f"seq_len:{SEQ_LEN}" in out
    assert res["data"] == "fineweb"  # the official val head's tokens, recognised from the tokens


def test_cli_labels_data_that_is_not_fineweb(run_dir, tmp_path, capsys):
    shifted = tmp_path / "data"
    shifted.mkdir()
    write_shard(shifted / "fineweb_val_000000.bin", read_shard(run_dir / "data" / "fineweb_val_000000.bin")[1:])
    assert main([str(run_dir), "--data-path", str(shifted), "--stride", str(SEQ_LEN), "--quiet"]) == 0
    assert results_line(capsys.readouterr().out)["data"] == "other"  # same text, one token later: not the val set


def test_cli_max_tokens_is_labelled_and_flags_take_underscores(run_dir, capsys):
    artifact = run_dir / "final_model.int8.zlib.lgz"
    assert main([str(artifact), "--max_tokens", "500", "--data_path", str(run_dir / "data"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "val_subset:first_500_targets" in out and results_line(out)["tokens"] == 500


def test_cli_model_plus_ngram_runs(run_dir, capsys):
    assert main([str(run_dir), "--scorer", "model+ngram", "--max-tokens", "1500", "--ngram-order", "4", "--quiet"]) == 0
    res = results_line(capsys.readouterr().out)
    assert res["tokens"] == 1500 and 0 < res["val_bpb"] < 20 and res["bytes"] > 0


def test_every_scorer_scores_every_target(run_dir, sp1024_model):
    model, _ = load_model(run_dir / "final_model.int8.zlib.lgz", sp1024_model)
    tokens = read_shard(run_dir / "data" / "fineweb_val_000000.bin")[:700].astype(np.int64)
    tables = build_byte_tables(load_tokenizer(sp1024_model))
    losses = {}
    for name in EVAL_SCORERS:
        factory = build_scorer_factory(name, model, seq_len=SEQ_LEN, stride=16, vocab_size=1024, ngram_order=4,
                                       ttt=dict(ttt_chunk=128, ttt_lr=1e-2, ttt_epochs=1, ttt_rank=2), phase_ends=(1, 2))
        res = evaluate_tokens(factory, tokens, tables, chunk_size=256)
        assert res["tokens"] == 699 and np.isfinite(res["val_loss"])
        losses[name] = res["val_loss"]
    assert len(set(losses.values())) == len(EVAL_SCORERS), losses  # each scorer really is different


def test_foreign_or_corrupt_file_is_refused_cleanly(run_dir, tmp_path, capsys):
    foreign = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, foreign)  # a pickle: must be refused, never unpickled
    corrupt = tmp_path / "bad.lgz"
    data = bytearray((run_dir / "final_model.int8.zlib.lgz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    for path, words in [(foreign, "not a lila_golf artifact"), (corrupt, "checksum mismatch"),
                        (tmp_path / "missing.lgz", "no such artifact")]:
        assert main([str(path), "--data-path", str(run_dir / "data"), "--seq-len", "32", "--tokenizer",
                     str(json.loads((run_dir / "config.json").read_text())["tokenizer_path"])]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main([str(empty)]) == 2 and "no final_model" in capsys.readouterr().err
    assert main([str(run_dir), "--stride", "64"]) == 2 and "exceeds seq_len" in capsys.readouterr().err


def test_audit_cli_with_model_scorers(run_dir, capsys):
    shard = str(run_dir / "data" / "fineweb_val_000000.bin")
    for name in ("model+ngram", "model+ttt"):
        assert name in audit.SCORER_BUILDERS
        code = audit.main(["--scorer", name, "--artifact", str(run_dir), "--max-tokens", "600", "--n-check", "1",
                           "--n-probe", "4", "--chunk-size", "200", "--ngram-order", "4", shard])
        out = capsys.readouterr().out
        assert code == 0 and out.count("PASS") == 4, out
    assert audit.main(["--scorer", "model", shard]) == 2 and "needs --artifact" in capsys.readouterr().err
