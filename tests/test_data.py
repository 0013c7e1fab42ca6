"""Shards, the distributed token stream, and exact byte accounting (lila_golf/core/data.py)."""
import hashlib
import io
import json
import math
import struct

import numpy as np
import pytest
import sentencepiece as spm
import torch

from lila_golf.core.data import (SHARD_MAGIC, SHARD_VERSION, ByteTables, DistributedTokenLoader, ShardError,
                            TokenizerError, bits_per_byte, build_byte_tables, check_tokenizer_exact,
                            load_tokenizer, load_val_tokens, read_shard, shard_paths, target_bytes,
                            target_bytes_torch, tokenizer_sha256, write_shard)


def _raw_shard(path, header_values, tokens, extra=b""):
    """A shard written by hand, so that its header can lie."""
    header = np.zeros(256, dtype="<i4")
    header[:len(header_values)] = header_values
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes() + extra)
    return path


# ----------------------------------------------------------------------------- shard format

def test_write_read_roundtrip_is_official_format(tmp_path):
    tokens = np.array([1, 5, 1023, 0, 65535, 7], dtype=np.int64)
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == 1024 + 2 * tokens.size
    assert struct.unpack("<3i", raw[:12]) == (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    assert not any(raw[12:1024])  # the rest of the header is zeros
    back = read_shard(path)
    assert back.dtype == np.uint16 and back.tolist() == tokens.tolist()


def test_empty_token_list_roundtrips(tmp_path):
    write_shard(tmp_path / "s.bin", [])
    assert read_shard(tmp_path / "s.bin").size == 0


@pytest.mark.parametrize("case, needle", [
    ("bad_magic", "bad magic"),
    ("bad_version", "version"),
    ("size_mismatch", "size mismatch"),
    ("truncated", "truncated file"),
    ("truncated_header", "truncated header"),
    ("empty", "empty file"),
])
def test_malformed_shards_raise_naming_file_and_problem(tmp_path, case, needle):
    path = tmp_path / f"{case}.bin"
    tokens = np.arange(10)
    if case == "bad_magic":
        _raw_shard(path, [12345, 1, 10], tokens)
    elif case == "bad_version":
        _raw_shard(path, [SHARD_MAGIC, 2, 10], tokens)
    elif case == "size_mismatch":
        _raw_shard(path, [SHARD_MAGIC, 1, 10], tokens, extra=b"\x00\x00")
    elif case == "truncated":
        _raw_shard(path, [SHARD_MAGIC, 1, 10], tokens[:7])
    elif case == "truncated_header":
        path.write_bytes(b"\x00" * 100)
    else:
        path.write_bytes(b"")
    with pytest.raises(ShardError) as err:
        read_shard(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_token_id_outside_vocab_raises_with_position(tmp_path):
    path = _raw_shard(tmp_path / "oov.bin", [SHARD_MAGIC, 1, 5], [1, 2, 1024, 3, 4])
    assert read_shard(path, vocab_size=1025).size == 5
    with pytest.raises(ShardError, match=r"oov\.bin: token id 1024 at position 2 .*vocab_size 1024"):
        read_shard(path, vocab_size=1024)


def test_missing_file_raises_shard_error(tmp_path):
    with pytest.raises(ShardError, match="nope.bin"):
        read_shard(tmp_path / "nope.bin")


@pytest.mark.parametrize("bad", [65536, -1])
def test_write_refuses_ids_that_do_not_fit_uint16(tmp_path, bad):
    with pytest.raises(ShardError, match=f"token id {bad} does not fit"):
        write_shard(tmp_path / "x.bin", [1, bad, 2])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_shard_paths_sorted_and_clear_when_nothing_matches(tmp_path):
    for i in (2, 0, 1):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", [i])
    paths = shard_paths(str(tmp_path / "fineweb_train_*.bin"))
    assert [p[-10:] for p in paths] == ["000000.bin", "000001.bin", "000002.bin"]
    with pytest.raises(ShardError, match="no shard files match"):
        shard_paths(str(tmp_path / "fineweb_val_*.bin"))


def test_load_val_tokens_concatenates_in_name_order(tmp_path):
    write_shard(tmp_path / "fineweb_val_000001.bin", [7, 8])
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 5, 6])
    assert load_val_tokens(str(tmp_path / "fineweb_val_*.bin")).tolist() == [1, 5, 6, 7, 8]


# ----------------------------------------------------------------------------- loader

@pytest.fixture()
def three_shards(tmp_path):
    """Shards of 37, 50 and 23 distinct tokens; the stream is 0..109 repeated."""
    sizes, start = (37, 50, 23), 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n))
        start += n
    return str(tmp_path / "fineweb_train_*.bin"), np.arange(start)


def _stream(reference, start, n):
    return np.resize(np.roll(reference, -(start % reference.size)), n)


def test_loader_ranks_disjoint_and_union_is_the_single_process_stream(three_shards):
    pattern, reference = three_shards
    world, seq_len, accum, global_tokens = 3, 4, 2, 48  # local_tokens = 48 // 6 = 8, span 9
    ranks = [DistributedTokenLoader(pattern, r, world) for r in range(world)]
    single = DistributedTokenLoader(pattern, 0, 1)  # one rank taking the same 27 tokens per call
    consumed = 0
    for _ in range(10):  # 270 tokens: crosses every shard boundary and wraps twice
        spans = []
        for loader in ranks:
            x, y = loader.next_batch(global_tokens, seq_len, accum)
            assert x.shape == y.shape == (2, 4) and x.dtype == torch.int64
            assert torch.equal(x.flatten()[1:], y.flatten()[:-1])
            spans.append(torch.cat([x.flatten(), y.flatten()[-1:]]).numpy())
        sx, sy = single.next_batch(26, 26, 1)
        assert len({tuple(s) for s in spans}) == world  # disjoint slices of the same chunk
        union = np.concatenate(spans)
        assert union.tolist() == _stream(reference, consumed, 27).tolist()
        assert union.tolist() == sx.flatten().tolist() + [int(sy.flatten()[-1])]
        consumed += 27


def test_loader_state_dict_resumes_exactly(three_shards):
    pattern, _ = three_shards
    a = DistributedTokenLoader(pattern, 1, 2)
    for _ in range(5):
        a.next_batch(40, 5, 2)
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON
    b = DistributedTokenLoader(pattern, 1, 2)
    b.load_state_dict(state)
    for _ in range(6):
        xa, ya = a.next_batch(40, 5, 2)
        xb, yb = b.next_batch(40, 5, 2)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_state_from_a_different_shard_set_is_refused(three_shards, tmp_path):
    pattern, _ = three_shards
    state = DistributedTokenLoader(pattern, 0, 1).state_dict()
    state["num_shards"] = 7
    with pytest.raises(ValueError, match="7 shards"):
        DistributedTokenLoader(pattern, 0, 1).load_state_dict(state)


def test_loader_rejects_bad_rank_and_empty_batch(three_shards):
    pattern, _ = three_shards
    with pytest.raises(ValueError, match="rank 2"):
        DistributedTokenLoader(pattern, 2, 2)
    with pytest.raises(ValueError, match="no full sequence"):
        DistributedTokenLoader(pattern, 0, 2).next_batch(16, 16, 1)


# ----------------------------------------------------------------------------- byte accounting

@pytest.fixture(scope="module")
def official_sp(request):
    model = request.getfixturevalue("sp1024_model")
    return load_tokenizer(model)


def test_official_byte_tables(official_sp):
    t = build_byte_tables(official_sp)
    assert isinstance(t, ByteTables) and t.base_bytes.dtype == np.int16 and t.base_bytes.size == 1024
    assert t.is_boundary[:4].all() and (t.base_bytes[:4] == 0).all()  # pad, bos, eos, unk
    assert (t.base_bytes[4:260] == 1).all() and not t.is_boundary[4:260].any()  # <0xNN>
    assert official_sp.id_to_piece(939) == "\u2581" and t.base_bytes[939] == 0 and t.has_leading_space[939]
    padded = build_byte_tables(official_sp, vocab_size=1088)
    assert padded.is_boundary[1024:].all() and (padded.base_bytes[1024:] == 0).all()
    with pytest.raises(TokenizerError, match="smaller"):
        build_byte_tables(official_sp, vocab_size=1000)


def test_official_val_head_stands_for_315257_bytes(official_sp, mini_data):
    tokens = read_shard(mini_data / "fineweb_val_000000.bin", vocab_size=1024)
    tables = build_byte_tables(official_sp)
    per_target = target_bytes(tokens[:-1], tokens[1:], tables)
    assert per_target.size == 131_071 and per_target.dtype == np.int64
    assert int(per_target.sum()) == 315_257
    t = torch.from_numpy(tokens.astype(np.int64))
    torch_bytes = target_bytes_torch(t[:-1], t[1:], tables)
    assert torch.equal(torch_bytes, torch.from_numpy(per_target))


def test_decoded_val_docs_byte_count_equals_utf8_length(official_sp, shared_data, mini_data):
    tables = build_byte_tables(official_sp)
    lines = (shared_data / "fineweb_docs" / "val_first108_docs_decoded.jsonl").read_text(encoding="utf-8")
    docs = [json.loads(line)["text"] for line in lines.splitlines()]
    assert len(docs) == 108
    stream = []
    for text in docs:
        ids = [1] + official_sp.encode(text)
        assert int(target_bytes(ids[:-1], ids[1:], tables).sum()) == len(text.encode("utf-8"))
        stream += ids
    head = read_shard(mini_data / "fineweb_val_000000.bin")
    assert head[:len(stream)].tolist() == stream  # re-encoding gives the official ids


def test_leading_space_rule_by_hand(official_sp):
    tables = build_byte_tables(official_sp)
    the = official_sp.piece_to_id("\u2581the")
    assert tables.has_leading_space[the] and tables.base_bytes[the] == 3
    # "▁the" after BOS: the space is not counted; after a word piece: 4 bytes; <0x41> is 1 byte.
    assert target_bytes([1, the, 1], [the, the, 4 + 0x41], tables).tolist() == [3, 4, 1]
    with pytest.raises(ValueError, match="outside the byte tables"):
        target_bytes([1], [5000], tables)


def test_bits_per_byte():
    assert bits_per_byte(100 * math.log(2), 100) == pytest.approx(1.0)
    assert bits_per_byte(3.0, 2) == pytest.approx(3.0 / math.log(2) / 2)
    with pytest.raises(ValueError, match="positive byte count"):
        bits_per_byte(1.0, 0)


def test_tokenizer_sha256(sp1024_model):
    assert tokenizer_sha256(sp1024_model) == hashlib.sha256(sp1024_model.read_bytes()).hexdigest()
    assert tokenizer_sha256(sp1024_model).startswith("4f5e8adb109c66b4")


# ----------------------------------------------------------------------------- exactness check

CHALLENGE_SETTINGS = dict(model_type="bpe", vocab_size=400, character_coverage=0.999, byte_fallback=True,
                          split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
                          pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False)


@pytest.fixture(scope="module")
def training_text():
    from pydoc_data.topics import topics  # real English prose shipped with CPython
    return [p.strip() for k in sorted(topics)[:40] for p in topics[k].split("\n\n") if p.strip()]


def _train(texts, **overrides) -> bytes:
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=writer, num_threads=1,
                                   minloglevel=2, **{**CHALLENGE_SETTINGS, **overrides})
    return writer.getvalue()


def _varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        value, shift, i = value | (b & 0x7F) << shift, shift + 7, i + 1
        if b < 0x80:
            return value, i


def _encode_varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _set_piece_type(proto: bytes, piece: str, piece_type: int) -> bytes:
    """Rewrite ModelProto field 1 (pieces): the entry whose field 1 == piece gets field 3 (type) set.
    A hand-rolled protobuf edit because google.protobuf is not installed."""
    out, i, hit = bytearray(), 0, False
    while i < len(proto):
        start = i
        key, i = _varint(proto, i)
        assert key & 7 == 2, "ModelProto top-level fields are all length-delimited"
        n, i = _varint(proto, i)
        body = proto[i:i + n]
        i += n
        if key >> 3 == 1 and _piece_name(body) == piece:
            body, hit = _replace_type(body, piece_type), True
            out += _encode_varint(key) + _encode_varint(len(body)) + body
        else:
            out += proto[start:i]
    assert hit, f"piece {piece!r} not found"
    return bytes(out)


def _piece_fields(body):
    i = 0
    while i < len(body):
        key, j = _varint(body, i)
        if key & 7 == 2:
            n, j = _varint(body, j)
            j += n
        elif key & 7 == 5:
            j += 4
        else:
            _, j = _varint(body, j)
        yield key, body[i:j]
        i = j


def _piece_name(body):
    for key, raw in _piece_fields(body):
        if key == (1 << 3) | 2:
            return raw[2:].decode("utf-8")  # key byte + 1-byte length (pieces are short)


def _replace_type(body, piece_type):
    kept = b"".join(raw for key, raw in _piece_fields(body) if key >> 3 != 3)
    return kept + _encode_varint(3 << 3) + _encode_varint(piece_type)


def test_official_tokenizer_passes(official_sp):
    check_tokenizer_exact(official_sp)


def test_tiny_tokenizer_with_challenge_settings_passes(training_text):
    sp = spm.SentencePieceProcessor(model_proto=_train(training_text))
    check_tokenizer_exact(sp)


def test_no_byte_fallback_is_refused(training_text):
    sp = spm.SentencePieceProcessor(model_proto=_train(training_text, byte_fallback=False))
    with pytest.raises(TokenizerError, match="no byte fallback"):
        check_tokenizer_exact(sp, name="nofallback")


def test_no_bare_space_piece_is_refused_and_really_overcounts(training_text):
    """Challenge issue #897: '▁the' exists but no bare '▁'; a lone space falls back to 3 bytes."""
    proto = _set_piece_type(_train(training_text), "\u2581", 5)  # 5 = UNUSED: the encoder skips it
    sp = spm.SentencePieceProcessor(model_proto=proto)
    assert sp.piece_to_id("\u2581the") != sp.unk_id()
    with pytest.raises(TokenizerError, match="no bare '\u2581' piece.*#897"):
        check_tokenizer_exact(sp)
    text = "x \u65e5 y \u00e9"
    ids = [1] + sp.encode(text)
    counted = int(target_bytes(ids[:-1], ids[1:], build_byte_tables(sp)).sum())
    assert counted == len(text.encode("utf-8")) + 3 * 2  # each lone space: 3 bytes instead of 1
    assert sp.decode(ids[1:]) == "x\u2581\u65e5\u2581y\u2581\u00e9"  # so decoding cannot be the reference


def test_no_space_in_training_text_means_no_bare_space_piece(training_text):
    texts = ["".join(t.split()) for t in training_text]
    sp = spm.SentencePieceProcessor(model_proto=_train(texts))
    assert sp.piece_to_id("\u2581") == sp.unk_id()
    with pytest.raises(TokenizerError, match="#897"):
        check_tokenizer_exact(sp)


@pytest.mark.parametrize("overrides", [
    dict(remove_extra_whitespaces=False),  # a document's leading space is lost after BOS
    dict(treat_whitespace_as_suffix=True),  # pieces end with '▁', which the rule counts as 3 bytes
])
def test_settings_that_break_exactness_are_refused(training_text, overrides):
    sp = spm.SentencePieceProcessor(model_proto=_train(training_text, **overrides))
    with pytest.raises(TokenizerError, match="per-token byte rule counts"):
        check_tokenizer_exact(sp)


def test_dummy_prefix_is_exact_and_accepted(training_text):
    """add_dummy_prefix puts '▁' on the first piece, but it follows BOS, so it is not counted."""
    sp = spm.SentencePieceProcessor(model_proto=_train(training_text, add_dummy_prefix=True))
    check_tokenizer_exact(sp)
    tables = build_byte_tables(sp)
    for text in training_text[:50]:
        ids = [1] + sp.encode(text)
        assert int(target_bytes(ids[:-1], ids[1:], tables).sum()) == len(sp.decode(ids[1:]).encode("utf-8"))


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(TokenizerError, match="junk.model: not a SentencePiece model"):
        load_tokenizer(junk)


def test_load_tokenizer_runs_the_exactness_check(tmp_path, training_text):
    path = tmp_path / "nofallback.model"
    path.write_bytes(_train(training_text, byte_fallback=False))
    with pytest.raises(TokenizerError, match="nofallback.model: no byte fallback"):
        load_tokenizer(path)
