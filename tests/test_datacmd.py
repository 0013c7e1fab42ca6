"""`data` commands: tokenize, train-tokenizer, stats, fetch (lila_golf/tools/datacmd.py, datafetch.py) and
the embedded corpus with resolve_data (corpus.py)."""
import gzip
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from lila_golf.core.data import load_tokenizer, read_shard, write_shard
from lila_golf.tools import corpus, datacmd


def _run(capsys, *argv):
    rc = datacmd.main(["data", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ----------------------------------------------------------------------------- tokenize

def test_tokenize_reproduces_official_train_shard_byte_for_byte(tmp_path, capsys, shared_data, sp1024_model, mini_data):
    docs = shared_data / "fineweb_docs" / "verify_docs_200.jsonl"
    rc, out, err = _run(capsys, "tokenize", "--tokenizer", sp1024_model, "--out", tmp_path, "--val-docs", 0, docs)
    assert rc == 0, err
    assert "docs:200 val_docs:0 val_tokens:0 train_tokens:628457 shards:1" in out
    assert (tmp_path / "fineweb_train_000000.bin").read_bytes() == (mini_data / "fineweb_train_000000.bin").read_bytes()


def test_tokenize_reproduces_val_head_documents(tmp_path, capsys, shared_data, sp1024_model, mini_data):
    docs = shared_data / "fineweb_docs" / "val_first108_docs_decoded.jsonl"
    rc, out, err = _run(capsys, "tokenize", "--tokenizer", sp1024_model, "--out", tmp_path, "--val-docs", 108, docs)
    assert rc == 0, err
    ours = read_shard(tmp_path / "fineweb_val_000000.bin")
    head = read_shard(mini_data / "fineweb_val_000000.bin")
    assert (ours == 1).sum() == 108 and ours.size < head.size
    assert np.array_equal(ours, head[:ours.size])
    assert head[ours.size] == 1  # the next official document starts right after the 108th


@pytest.fixture(scope="module")
def tiny_sp(tmp_path_factory):
    """A small tokenizer trained with the challenge's settings on CPython's pydoc topics."""
    from pydoc_data.topics import topics
    texts = [p for k in sorted(topics)[:30] for p in topics[k].split("\n\n")]
    proto = datacmd.train_tokenizer_proto(datacmd.training_sentences(texts, None), vocab_size=400)
    path = tmp_path_factory.mktemp("tok") / "tiny.model"
    path.write_bytes(proto)
    return path, spm.SentencePieceProcessor(model_file=str(path))


def test_tokenize_formats_split_and_shard_spill(tmp_path, capsys, tiny_sp):
    """jsonl.gz, parquet and txt in argument order; val/train split; documents spill across shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    model, sp = tiny_sp
    docs = ["Assert statements are a convenient way.", "The with statement is used", "Names refer to objects.",
            "Comparisons yield boolean values:", "Binding of names"]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(docs[:2])) + "\n")
    pq.write_table(pa.table({"text": docs[2:4]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text(docs[4], encoding="utf-8")
    out = tmp_path / "shards"
    inputs = [tmp_path / "a.jsonl.gz", tmp_path / "b.parquet", tmp_path / "c.txt"]
    rc, stdout, err = _run(capsys, "tokenize", "--tokenizer", model, "--out", out, "--val-docs", 2,
                           "--shard-tokens", 16, *inputs)
    assert rc == 0, err
    expected = [np.array([1] + sp.encode(t), dtype=np.uint16) for t in docs]
    val = [read_shard(p) for p in sorted(out.glob("fineweb_val_*.bin"))]
    train = [read_shard(p) for p in sorted(out.glob("fineweb_train_*.bin"))]
    assert np.array_equal(np.concatenate(val), np.concatenate(expected[:2]))
    assert np.array_equal(np.concatenate(train), np.concatenate(expected[2:]))
    assert all(s.size == 16 for s in val[:-1] + train[:-1]) and len(train) > 1
    # a second run into the same folder is refused unless --overwrite
    rc, _, err = _run(capsys, "tokenize", "--tokenizer", model, "--out", out, "--val-docs", 2, *inputs)
    assert rc == 1 and "--overwrite" in err


def test_tokenize_refuses_unknown_format_and_missing_field(tmp_path, capsys, tiny_sp):
    model, _ = tiny_sp
    (tmp_path / "d.csv").write_text("text\nhello\n")
    rc, _, err = _run(capsys, "tokenize", "--tokenizer", model, "--out", tmp_path / "o", tmp_path / "d.csv")
    assert rc == 1 and "d.csv: unknown document format" in err
    (tmp_path / "e.jsonl").write_text(json.dumps({"body": "hello"}) + "\n")
    rc, _, err = _run(capsys, "tokenize", "--tokenizer", model, "--out", tmp_path / "o", tmp_path / "e.jsonl")
    assert rc == 1 and "no 'text' field" in err
    (tmp_path / "f.jsonl").write_text('{"text": "ok"}\n{not json\n')
    rc, _, err = _run(capsys, "tokenize", "--tokenizer", model, "--out", tmp_path / "o", tmp_path / "f.jsonl")
    assert rc == 1 and "f.jsonl: cannot read documents as json" in err


# ----------------------------------------------------------------------------- train-tokenizer

def _proto_fields(buf):
    """Top-level (field -> value) of a protobuf message: varints as ints, fixed32 as floats."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        kind = key & 7
        if kind == 0:
            value, i = _varint(buf, i)
        elif kind == 5:
            value, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
        else:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        fields.setdefault(key >> 3, value)
    return fields


def _varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        value, shift, i = value | (b & 0x7F) << shift, shift + 7, i + 1
        if b < 0x80:
            return value, i


def _specs(model_bytes):
    top = _proto_fields(model_bytes)
    return _proto_fields(top[2]), _proto_fields(top[3])  # trainer_spec, normalizer_spec


def test_train_tokenizer_matches_the_official_settings(tmp_path, capsys, sp1024_model):
    from pydoc_data.topics import topics
    lines = [json.dumps({"text": topics[k]}) for k in sorted(topics)[:25]]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = tmp_path / "tok" / "mine_400_bpe"
    rc, out, err = _run(capsys, "train-tokenizer", "--input", tmp_path / "docs.jsonl", "--vocab-size", 400,
                        "--out", prefix, "--txt-sample", "paragraph", "--num-threads", 1)
    assert rc == 0, err
    model = prefix.with_suffix(".model")
    assert "vocab_size:400" in out and model.is_file() and prefix.with_suffix(".vocab").is_file()
    load_tokenizer(model)  # passes the exactness check
    ours_trainer, ours_norm = _specs(model.read_bytes())
    ref_trainer, ref_norm = _specs(sp1024_model.read_bytes())
    # model_type, character_coverage, split_digits, hard_vocab_limit, byte_fallback, unk/bos/eos/pad ids
    for field in (3, 10, 25, 33, 35, 40, 41, 42, 43):
        assert ours_trainer.get(field) == ref_trainer.get(field), field
    assert ours_trainer[4] == 400 and ref_trainer[4] == 1024
    assert ours_norm[1] == ref_norm[1] == b"nmt_nfkc" and ours_norm.get(3) == ref_norm.get(3) == 0


# ----------------------------------------------------------------------------- stats

def test_stats_on_the_official_val_head(capsys, sp1024_model, mini_data):
    rc, out, err = _run(capsys, "stats", "--tokenizer", sp1024_model, mini_data / "fineweb_val_000000.bin")
    assert rc == 0, err
    assert "tokens:131071 bytes:315257 bytes_per_token:2.405238" in out


def test_stats_reports_a_bad_shard(tmp_path, capsys, sp1024_model):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x01" * 2048)
    rc, _, err = _run(capsys, "stats", "--tokenizer", sp1024_model, bad)
    assert rc == 1 and "bad.bin: bad magic" in err


# ----------------------------------------------------------------------------- fetch

@pytest.fixture()
def fake_hub(tmp_path, shared_data, mini_data, monkeypatch):
    """A local folder laid out like the hub dataset, served by a stand-in for hf_hub_download."""
    import huggingface_hub
    root = tmp_path / "hub"
    remote = root / "datasets"
    (remote / "datasets" / "fineweb10B_sp1024").mkdir(parents=True)
    (remote / "tokenizers").mkdir()
    shutil.copy(shared_data / "tokenizers" / "manifest_sp1024_fineweb10B.json", remote / "manifest.json")
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin", "fineweb_train_000001.bin"):
        os.symlink(mini_data / name, remote / "datasets" / "fineweb10B_sp1024" / name)
    for name in ("fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab"):
        shutil.copy(shared_data / "tokenizers" / name, remote / "tokenizers" / name)
    calls = []

    def fake_download(repo_id, filename, *, subfolder=None, repo_type=None, **kwargs):
        calls.append((repo_id, subfolder, filename, repo_type))
        assert repo_id == "willdepueoai/parameter-golf" and repo_type == "dataset"
        assert subfolder.split("/")[0] == "datasets"
        return str(root / subfolder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return calls


def _listening_endpoint():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def test_fetch_writes_the_challenge_layout(tmp_path, capsys, fake_hub, mini_data, monkeypatch):
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    server, endpoint = _listening_endpoint()  # the reachability probe connects here
    out = tmp_path / "data"
    with server:
        rc, stdout, err = _run(capsys, "fetch", "--variant", "sp1024", "--train-shards", 2, "--out", out,
                               "--endpoint", endpoint)
    assert rc == 0, err
    assert ("willdepueoai/parameter-golf", "datasets", "manifest.json", "dataset") in fake_hub
    assert ("willdepueoai/parameter-golf", "datasets/datasets/fineweb10B_sp1024", "fineweb_train_000001.bin",
            "dataset") in fake_hub
    assert ("willdepueoai/parameter-golf", "datasets/tokenizers", "fineweb_1024_bpe.model", "dataset") in fake_hub
    shards = out / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in shards.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    assert (shards / "fineweb_val_000000.bin").read_bytes() == (mini_data / "fineweb_val_000000.bin").read_bytes()
    assert sorted(p.name for p in (out / "tokenizers").iterdir()) == ["fineweb_1024_bpe.model", "fineweb_1024_bpe.vocab"]
    assert (out / "manifest.json").is_file() and "fetch_done" in stdout
    n_calls = len(fake_hub)
    rc, _, err = _run(capsys, "fetch", "--train-shards", 2, "--out", out, "--endpoint", endpoint)
    assert rc == 0 and len(fake_hub) == n_calls  # everything present: nothing downloaded again


def test_fetch_refuses_more_train_shards_than_published(tmp_path, capsys, fake_hub):
    server, endpoint = _listening_endpoint()
    with server:
        rc, _, err = _run(capsys, "fetch", "--train-shards", 999, "--out", tmp_path / "d", "--endpoint", endpoint)
    assert rc == 1 and "195 train shards" in err


def test_fetch_offline_fails_fast_with_advice(tmp_path, capsys, monkeypatch):
    import huggingface_hub
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("must not download"))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    t0 = time.perf_counter()
    rc, _, err = _run(capsys, "fetch", "--out", tmp_path / "data", "--endpoint", f"http://127.0.0.1:{port}")
    assert rc == 1 and time.perf_counter() - t0 < 10
    assert "could not reach the Hugging Face hub" in err and "HF_ENDPOINT" in err and "copy the files" in err


# ----------------------------------------------------------------------------- embedded corpus, resolve_data

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "embedded_corpus"
    return out, corpus.build_embedded_corpus(out)


def test_embedded_corpus_builds_valid_shards_and_tokenizer(embedded):
    _, (data_dir, model) = embedded
    sp = load_tokenizer(model)  # runs the exactness check
    assert sp.vocab_size() == 1024
    val = read_shard(Path(data_dir) / "fineweb_val_000000.bin", vocab_size=1024)
    train = read_shard(Path(data_dir) / "fineweb_train_000000.bin", vocab_size=1024)
    n_val, n_train = int((val == 1).sum()), int((train == 1).sum())
    assert val[0] == train[0] == 1 and 0.05 <= n_val / (n_val + n_train) <= 0.10
    assert train.size > 100_000
    marker = json.loads((Path(data_dir) / "corpus.json").read_text())
    assert marker["fineweb"] is False and marker["docs"] == n_val + n_train


def test_embedded_corpus_is_cached_and_rebuilt_when_damaged(embedded):
    out, (data_dir, model) = embedded
    val = Path(data_dir) / "fineweb_val_000000.bin"
    before = val.read_bytes()
    mtime = val.stat().st_mtime_ns
    assert corpus.build_embedded_corpus(out) == (data_dir, model) and val.stat().st_mtime_ns == mtime
    write_shard(val, [1, 2, 3])
    corpus.build_embedded_corpus(out)
    assert val.read_bytes() == before  # deterministic rebuild


def test_resolve_data_order(tmp_path, monkeypatch, embedded, mini_data, sp1024_model):
    out, (emb_dir, emb_model) = embedded
    monkeypatch.chdir(tmp_path)
    # nothing here: the embedded corpus (from the cache dir), labelled not FineWeb
    assert corpus.resolve_data(cache_dir=out.parent) == (emb_dir, emb_model, False)
    # explicit paths win; an embedded data dir names its own tokenizer
    assert corpus.resolve_data(emb_dir) == (emb_dir, emb_model, False)
    assert corpus.resolve_data(str(mini_data), str(sp1024_model)) == (str(mini_data), str(sp1024_model), True)
    with pytest.raises(ValueError, match="cannot tell which tokenizer"):
        corpus.resolve_data(str(mini_data))
    with pytest.raises(ValueError, match="without a data path"):
        corpus.resolve_data(tokenizer_path=str(sp1024_model))
    # the challenge layout in the working directory
    shards = tmp_path / "data" / "datasets" / "fineweb10B_sp1024"
    shards.mkdir(parents=True)
    (tmp_path / "data" / "tokenizers").mkdir()
    os.symlink(mini_data / "fineweb_val_000000.bin", shards / "fineweb_val_000000.bin")
    os.symlink(sp1024_model, tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model")
    model = str(tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model")
    assert corpus.resolve_data(cache_dir=out.parent) == (str(shards), model, True)
    assert corpus.resolve_data(str(shards / "fineweb_val_*.bin")) == (str(shards), model, True)


# ----------------------------------------------------------------------------- help

@pytest.mark.parametrize("sub", [[], ["fetch"], ["tokenize"], ["train-tokenizer"], ["stats"]])
def test_every_command_has_help(capsys, sub):
    with pytest.raises(SystemExit) as exit_info:
        datacmd.main(["data", *sub, "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_data_without_subcommand_prints_help(capsys):
    assert datacmd.main(["data"]) == 2 and "fetch" in capsys.readouterr().out


# ----------------------------------------------------------------------------- check-bytes

def test_check_bytes_val_head_equals_its_documents(shared_data, capsys):
    from lila_golf.tools.datacmd import main as data_main
    shard = shared_data / "fineweb10B_sp1024_mini" / "fineweb_val_000000.bin"
    args = ["data", "check-bytes", "--tokenizer", str(shared_data / "tokenizers" / "fineweb_1024_bpe.model"),
            str(shard), str(shared_data / "fineweb_docs" / "val_first108_docs_decoded.jsonl")]
    assert data_main(args) == 0
    out = capsys.readouterr().out
    assert "docs:108 (1 shard docs beyond the file, not compared) equal:108 differ:0" in out
    assert "counted_bytes:313038 utf8_bytes:313038" in out


def test_check_bytes_reports_normalisation_per_document(shared_data, capsys):
    """The raw train docs: the tokenizer's NFKC/whitespace normalisation changes some documents' bytes."""
    from lila_golf.tools.datacmd import main as data_main
    shard = shared_data / "fineweb10B_sp1024_mini" / "fineweb_train_000000.bin"
    args = ["data", "check-bytes", "--tokenizer", str(shared_data / "tokenizers" / "fineweb_1024_bpe.model"),
            str(shard), str(shared_data / "fineweb_docs" / "verify_docs_200.jsonl")]
    assert data_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    rows = [l for l in out if l.startswith("doc:")]
    assert len(rows) == 33 and all("cause:normalisation" in r for r in rows)
    assert "docs:200 equal:167 differ:33 counted_bytes:1489418 utf8_bytes:1489515" in out[-1]


def test_check_bytes_reads_a_sidecar_and_names_the_document_it_miscounts(shared_data, tmp_path, capsys):
    import shutil
    import numpy as np
    import sentencepiece
    from lila_golf.core.data import build_byte_tables, read_shard, target_bytes, write_shard
    from lila_golf.tools.datacmd import main as data_main, sidecar_path, document_spans
    tok = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    shard = Path(shutil.copy(shared_data / "fineweb10B_sp1024_mini" / "fineweb_val_000000.bin", tmp_path))
    tokens = read_shard(shard).astype(np.int64)
    per_token = np.zeros(tokens.size, dtype=np.int64)  # each token's bytes; BOS and the first token 0
    per_token[1:] = target_bytes(tokens[:-1], tokens[1:], build_byte_tables(sentencepiece.SentencePieceProcessor(model_file=str(tok))))
    write_shard(sidecar_path(shard), per_token)
    docs = str(shared_data / "fineweb_docs" / "val_first108_docs_decoded.jsonl")
    assert data_main(["data", "check-bytes", "--tokenizer", str(tok), str(shard), docs]) == 0
    assert "counted_by:sidecar" in capsys.readouterr().out
    a, _ = document_spans(tokens, 1)[5]
    per_token[a + 3] += 2  # doc 5's sidecar claims two bytes too many
    write_shard(sidecar_path(shard), per_token)
    assert data_main(["data", "check-bytes", "--tokenizer", str(tok), str(shard), docs]) == 1
    out = capsys.readouterr().out
    assert out.startswith("doc:5 ") and "diff:+2 cause:per-token count +2 bytes off the decoded text" in out
    write_shard(sidecar_path(shard), per_token[:-1])
    assert data_main(["data", "check-bytes", "--tokenizer", str(tok), str(shard), docs]) == 1
    assert "byte counts for the 131072 tokens" in capsys.readouterr().err
