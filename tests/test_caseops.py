"""CaseOps (issue 17): the lossless case transform on every shared FineWeb doc and adversarial text,
the byte sidecar against the real CaseOps tokenizer (sums to the original UTF-8 bytes, "İ" included),
scoring from the sidecar only (train_gpt.py, eval, audit), the leak guard and `data check-split`,
`data fetch --variant sp8192 --repo-id`."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import sentencepiece as spm

from lila_golf.core.caseops import CaseOpsError, caseops_byte_counts, caseops_decode, caseops_encode
from lila_golf.core.data import (CASEOPS_OPERATORS, TokenizerError, build_byte_tables, load_tokenizer, read_shard,
                                 shard_file, target_bytes, val_target_bytes, write_shard)
from lila_golf.tools import datacmd
from lila_golf.tools.splitguard import check_split

ADVERSARIAL = [
    "", "a", "A", "I", "Hello World", "NASA", "iPhone", "McDonald's", "HTTPServer", "ABCdef", "aBC", "x1Y2Z3",
    "ÉCOLE normale", "İstanbul İİ ı i̇", "ǅungla ǈ ß ẞ ﬁ Ω ω", "日本語 ABC 中文", "\U0001F600SMILE\U0001F600",
    "\ue001", "\ue001\ue002\ue003\ue004", "\ue004a", "A\ue001b", "\ue000\ue005 private use",
    "  leading and trailing  ", "line\nLINE\r\nLine\tTAB", "O'Neil-SMITH vs. o'neil", "ﬀ ﬃ ＡＢＣ (fullwidth)",
]


def shared_docs(shared_data):
    for name in ("val_first108_docs_decoded.jsonl", "verify_docs_200.jsonl"):
        with open(shared_data / "fineweb_docs" / name, encoding="utf-8") as f:
            yield from (json.loads(line)["text"] for line in f)


@pytest.fixture(scope="module")
def caseops_sp(shared_data):
    path = shared_data / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
    return path, spm.SentencePieceProcessor(model_file=str(path))


# ------------------------------------------------------------------ the transform

@pytest.mark.parametrize("text", ADVERSARIAL)
def test_round_trip_and_byte_counts_on_adversarial_text(text):
    encoded = caseops_encode(text)
    assert caseops_decode(encoded) == text
    assert sum(caseops_byte_counts(encoded)) == len(text.encode("utf-8"))
    assert not any("A" <= c <= "Z" for c in encoded)  # every ASCII capital became an operator


def test_round_trip_on_every_shared_fineweb_doc(shared_data):
    n = 0
    for text in shared_docs(shared_data):
        encoded = caseops_encode(text)
        assert caseops_decode(encoded) == text
        assert sum(caseops_byte_counts(encoded)) == len(text.encode("utf-8"))
        n += 1
    assert n == 308


def test_encoding_uses_the_four_operators():
    title, allcaps, capnext, esc = CASEOPS_OPERATORS
    assert caseops_encode("The NASA iPhone \ue002") == f"{title}the {allcaps}nasa i{capnext}phone {esc}\ue002"


@pytest.mark.parametrize("bad", ["\ue001", "\ue0011", "\ue002 x", "\ue003", "\ue003A", "\ue004", "\ue004x"])
def test_malformed_encoding_is_refused(bad):
    with pytest.raises(CaseOpsError):
        caseops_decode(bad)


# ------------------------------------------------------------------ the real tokenizer and the sidecar

def test_real_tokenizer_holds_the_operators_at_ids_4_to_7(caseops_sp):
    _, sp = caseops_sp
    assert [sp.piece_to_id(op) for op in CASEOPS_OPERATORS] == [4, 5, 6, 7]
    tables = build_byte_tables(sp)
    assert tables.sidecar_required
    with pytest.raises(TokenizerError, match="sidecar"):
        target_bytes(np.array([1, 4]), np.array([4, 100]), tables)


def test_tokenize_writes_a_sidecar_that_sums_to_the_original_bytes(tmp_path, capsys, shared_data, caseops_sp):
    """Val shards and their byte sidecars: per document the shares sum to its UTF-8 length, over the
    whole shard to the UTF-8 length of all val docs; "İ" (whose lowercase is longer) included."""
    path, sp = caseops_sp
    docs = list(shared_docs(shared_data))[:108] + ["İstanbul İİ ǅ \ue002 NASA", "   "]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs + ["Train DOC one", "train doc two"]))
    out = tmp_path / "shards"
    rc = datacmd.main(["data", "tokenize", "--tokenizer", str(path), "--out", str(out), "--val-docs", str(len(docs)),
                       "--shard-tokens", "20000", str(src)])
    assert rc == 0, capsys.readouterr().err
    vals = sorted(out.glob("fineweb_val_[0-9]*.bin"))
    sides = [out / p.name.replace("fineweb_val_", "fineweb_val_bytes_") for p in vals]
    assert len(vals) > 1 and all(s.is_file() for s in sides) and not list(out.glob("fineweb_train_bytes_*"))
    tokens = np.concatenate([read_shard(p) for p in vals])
    shares = np.concatenate([read_shard(s) for s in sides]).astype(np.int64)
    assert tokens.size == shares.size
    assert shares.sum() == sum(len(t.encode("utf-8")) for t in docs)
    starts = list(np.flatnonzero(tokens == sp.bos_id())) + [tokens.size]
    assert len(starts) - 1 == len(docs)
    for text, a, b in zip(docs, starts[:-1], starts[1:]):
        assert shares[a:b].sum() == len(text.encode("utf-8"))
        assert shares[a] == (len(text.encode("utf-8")) if b == a + 1 else 0)  # BOS: 0 unless the doc has no token
    got = val_target_bytes(tokens.astype(np.int64), build_byte_tables(sp), shard_file(out, "val"))
    assert np.array_equal(got, shares[1:])


def test_operator_tokens_stand_for_no_bytes(caseops_sp):
    from lila_golf.tools.caseopsdata import encode_caseops_docs
    _, sp = caseops_sp
    [(ids, shares)] = encode_caseops_docs(sp, ["The NASA said \ue001 hi"])
    esc = np.flatnonzero(ids == 7)
    assert esc.size == 1 and shares[esc[0]] == 0  # ESC stands for nothing ...
    assert ids[esc[0] + 1] == 4 and shares[esc[0] + 1] == 3  # ... the literal U+E001 after it for its 3 bytes
    ops = np.isin(ids, [4, 5, 6])
    ops[esc[0] + 1] = False
    assert list(ids[ops]) == [4, 5] and (shares[ops] == 0).all()  # TITLE, ALLCAPS
    assert shares.sum() == len("The NASA said \ue001 hi".encode())


# ------------------------------------------------------------------ scoring from the sidecar only

@pytest.fixture(scope="module")
def caseops_run(tmp_path_factory, shared_data, caseops_sp):
    """A tiny CaseOps dataset and a 2-step train_gpt.py run on it."""
    from lila_golf.tools.bundle import build_bundle
    import subprocess
    import sys
    path, _ = caseops_sp
    tmp = tmp_path_factory.mktemp("caseops")
    docs = list(shared_docs(shared_data))
    src = tmp / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:20] + docs[108:160]))
    data = tmp / "data"
    assert datacmd.main(["data", "tokenize", "--tokenizer", str(path), "--out", str(data), "--val-docs", "20", str(src)]) == 0
    script = tmp / "train_gpt.py"
    script.write_text(build_bundle())
    env = {**os.environ, "PRESET": "test", "DATA_PATH": str(data), "TOKENIZER_PATH": str(path), "VOCAB_SIZE": "8192",
           "OUT_DIR": str(tmp / "runs"), "RUN_ID": "caseops", "OMP_NUM_THREADS": "1", "ITERATIONS": "2",
           "VAL_MAX_TOKENS": "0", "EVAL_STRIDE": "32"}
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    return tmp, data, path, proc, env


def test_train_gpt_scores_caseops_from_the_sidecar(caseops_run):
    tmp, data, path, proc, _ = caseops_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp / "runs" / "caseops" / "train.log").read_text()
    assert "val_bytes:sidecar" in log
    sidecar_bytes = int(read_shard(data / "fineweb_val_bytes_000000.bin").astype(np.int64)[1:].sum())
    assert f"val_bytes:{sidecar_bytes}" in log
    for line in re.findall(r"final_\S+_roundtrip(?:_sliding stride:32)? .*bytes:(\d+)", log):
        assert int(line) == sidecar_bytes  # plain and sliding evaluation count the sidecar's bytes


def test_train_gpt_refuses_caseops_without_a_sidecar(caseops_run, tmp_path):
    import subprocess
    import sys
    tmp, data, path, _, env = caseops_run
    bare = tmp_path / "bare"
    shutil.copytree(data, bare)
    (bare / "fineweb_val_bytes_000000.bin").unlink()
    proc = subprocess.run([sys.executable, str(tmp / "train_gpt.py")], env={**env, "DATA_PATH": str(bare), "RUN_ID": "bare"},
                          cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "fineweb_val_bytes_000000.bin: missing" in proc.stderr


def test_eval_and_audit_score_from_the_sidecar_and_refuse_without(caseops_run, tmp_path, capsys):
    from lila_golf.tools import audit, evalcmd
    tmp, data, path, _, _ = caseops_run
    run = tmp / "runs" / "caseops"
    sidecar_bytes = int(read_shard(data / "fineweb_val_bytes_000000.bin").astype(np.int64)[1:].sum())
    assert evalcmd.main([str(run), "--data-path", str(data), "--stride", "64", "--quiet"]) == 0
    assert f"bytes:{sidecar_bytes}" in capsys.readouterr().out
    bare = tmp_path / "bare"
    shutil.copytree(data, bare)
    (bare / "fineweb_val_bytes_000000.bin").unlink()
    assert evalcmd.main([str(run), "--data-path", str(bare), "--quiet"]) == 2
    assert "fineweb_val_bytes_000000.bin: missing" in capsys.readouterr().err
    shard = str(bare / "fineweb_val_000000.bin")
    assert audit.main(["--scorer", "ngram", "--vocab-size", "8192", "--tokenizer", str(path), shard]) == 2
    assert "missing" in capsys.readouterr().err
    shard = str(data / "fineweb_val_000000.bin")
    audit.main(["--scorer", "ngram", "--vocab-size", "8192", "--tokenizer", str(path), "--max-tokens", "3000", "--n-check", "1", shard])
    out = capsys.readouterr().out
    side = read_shard(data / "fineweb_val_bytes_000000.bin").astype(np.int64)
    assert f"bytes:{int(side[1:3000].sum())}" in out


# ------------------------------------------------------------------ the leak guard

def test_tokenize_refuses_a_train_document_equal_to_a_val_document(tmp_path, capsys, sp1024_model, shared_data):
    docs = list(shared_docs(shared_data))[:5]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs + ["a train doc", docs[3]]))
    out = tmp_path / "out"
    rc = datacmd.main(["data", "tokenize", "--tokenizer", str(sp1024_model), "--out", str(out), "--val-docs", "5", str(src)])
    err = capsys.readouterr().err
    assert rc == 1 and "document 6 of the input equals validation document 3" in err
    assert not list(out.glob("*.bin"))  # nothing left behind


def test_check_split_catches_a_planted_overlap(tmp_path, capsys, sp1024_model, shared_data):
    docs = list(shared_docs(shared_data))
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:30] + docs[108:168]))
    out = tmp_path / "shards"
    assert datacmd.main(["data", "tokenize", "--tokenizer", str(sp1024_model), "--out", str(out), "--val-docs", "30",
                         "--shard-tokens", "30000", str(src)]) == 0
    capsys.readouterr()
    assert datacmd.main(["data", "check-split", str(out)]) == 0
    assert "check_split val_docs:30 train_docs:60 overlaps:0" in capsys.readouterr().out
    val = read_shard(out / "fineweb_val_000000.bin")
    starts = np.flatnonzero(val == 1)
    planted = val[starts[7]:starts[8]]  # val document 7
    train = read_shard(out / "fineweb_train_000001.bin")
    at = np.flatnonzero(train == 1)[2]
    write_shard(out / "fineweb_train_000001.bin", np.concatenate((train[:at], planted, train[at:])))
    assert datacmd.main(["data", "check-split", str(out)]) == 1
    report = capsys.readouterr().out
    assert "overlaps:1" in report and "val_doc:7" in report
    assert check_split(out)["train_docs"] == 61


def test_check_split_on_the_real_mini_data(capsys, mini_data):
    assert datacmd.main(["data", "check-split", str(mini_data)]) == 0
    assert re.search(r"check_split val_docs:109 train_docs:3000 overlaps:0", capsys.readouterr().out)


def test_train_tokenizer_refuses_input_holding_val_documents(tmp_path, capsys, shared_data):
    docs = list(shared_docs(shared_data))
    val, train = tmp_path / "val.jsonl", tmp_path / "train.jsonl"
    val.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:108]))
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[108:120] + [docs[50]]))
    rc = datacmd.main(["data", "train-tokenizer", "--input", str(train), "--vocab-size", "300", "--out",
                       str(tmp_path / "tok"), "--val", str(val)])
    assert rc == 1 and "document 12 of the input equals validation document 50" in capsys.readouterr().err
    assert not (tmp_path / "tok.model").exists()


# ------------------------------------------------------------------ fetch of a community variant

def test_fetch_sp8192_from_a_community_repo(tmp_path, capsys, monkeypatch, shared_data, caseops_sp):
    """A local folder laid out like a community export (manifest + datasets/fineweb10B_sp8192 +
    tokenizer), served by a stand-in for hf_hub_download: --repo-id reaches it."""
    import huggingface_hub
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(key, "http://proxy.invalid")  # skips the reachability probe
    root = tmp_path / "hub" / "datasets"
    shards = root / "datasets" / "fineweb10B_sp8192"
    shards.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    shutil.copy(shared_data / "tokenizers" / "fineweb_8192_bpe.model", root / "tokenizers")
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin"):
        write_shard(shards / name, np.array([1, 100, 200], dtype=np.uint16))
    manifest = {"tokenizers": [{"name": "sp_bpe_8192", "model_path": "tokenizers/fineweb_8192_bpe.model"}],
                "datasets": [{"name": "fineweb10B_sp8192", "tokenizer_name": "sp_bpe_8192",
                              "stats": {"files_val": 1, "files_train": 1}}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    seen = []

    def fake_download(repo_id, filename, *, subfolder=None, repo_type=None, **kwargs):
        seen.append(repo_id)
        return str(tmp_path / "hub" / subfolder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = tmp_path / "data"
    rc = datacmd.main(["data", "fetch", "--variant", "sp8192", "--repo-id", "kevclark/parameter-golf",
                       "--train-shards", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert set(seen) == {"kevclark/parameter-golf"}
    assert (out / "datasets" / "fineweb10B_sp8192" / "fineweb_train_000000.bin").is_file()
    assert (out / "tokenizers" / "fineweb_8192_bpe.model").is_file()
    assert (out / "manifest.kevclark__parameter-golf.json").is_file()
    load_tokenizer(out / "tokenizers" / "fineweb_8192_bpe.model")  # exact under the byte rule
    rc = datacmd.main(["data", "fetch", "--variant", "sp4096", "--repo-id", "kevclark/parameter-golf", "--out", str(out)])
    assert rc == 1 and "fineweb10B_sp4096 is not in the manifest of kevclark/parameter-golf" in capsys.readouterr().err


def test_stats_count_a_caseops_val_shard_from_its_sidecar(caseops_run, capsys):
    _, data, path, _, _ = caseops_run
    side = read_shard(data / "fineweb_val_bytes_000000.bin").astype(np.int64)
    assert datacmd.main(["data", "stats", "--tokenizer", str(path), str(data / "fineweb_val_000000.bin")]) == 0
    assert f"bytes:{int(side[1:].sum())}" in capsys.readouterr().out
    assert datacmd.main(["data", "stats", "--tokenizer", str(path), str(data / "fineweb_train_000000.bin")]) == 1
    assert "only val shards" in capsys.readouterr().err
