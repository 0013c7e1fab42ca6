"""Official shard format, the distributed token stream, and exact val_bpb byte accounting.

Shards (challenge format): 256 little-endian int32 header values (magic 20240520, version 1,
token count, zeros), then `count` little-endian uint16 token ids; file size = 1024 + 2 * count.

    tokens = read_shard("data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin", vocab_size=1024)
    sp = load_tokenizer("data/tokenizers/fineweb_1024_bpe.model")   # refuses inexact tokenizers
    tables = build_byte_tables(sp)
    n_bytes = target_bytes(tokens[:-1], tokens[1:], tables).sum()
    val_bpb = bits_per_byte(sum_nll_nats, n_bytes)

Byte rule (parameter-golf "The metric"): a target stands for the UTF-8 length of its piece without
one leading "▁", plus 1 for that "▁" unless the previous token is a control/unknown/unused id;
byte-fallback pieces <0xNN> are 1 byte; control/unknown/unused ids are 0 bytes (BOS is scored but
stands for 0 bytes).
"""
import glob
import hashlib
import math
import os
from dataclasses import dataclass, field

import numpy as np
import sentencepiece
import torch

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4
SPACE_PIECE = "\u2581"  # "▁", SentencePiece's whitespace meta symbol
# CaseOps (PR #1729): lowercased text, case as these pieces (TITLE, ALLCAPS, CAPNEXT, ESC)
CASEOPS_OPERATORS = ("\ue001", "\ue002", "\ue003", "\ue004")


class ShardError(ValueError):
    """A token shard that is missing, malformed or inconsistent with the tokenizer."""


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, or whose bytes the per-token rule cannot count exactly."""


# ----------------------------------------------------------------------------- shards

def _shard_read_count(path: str) -> int:
    """Validate the header and file size of a shard; return its token count."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ShardError(f"{path}: cannot open shard ({exc.strerror or exc})") from None
    if size == 0:
        raise ShardError(f"{path}: empty file (a shard needs a {SHARD_HEADER_BYTES}-byte header)")
    if size < SHARD_HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({size} bytes, need {SHARD_HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a token shard")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = SHARD_HEADER_BYTES + 2 * count
    if count < 0:
        raise ShardError(f"{path}: negative token count {count} in header")
    if size < expected:
        raise ShardError(f"{path}: truncated file: header says {count} tokens ({expected} bytes) "
                         f"but the file has {size} bytes")
    if size != expected:
        raise ShardError(f"{path}: size mismatch: header says {count} tokens ({expected} bytes) "
                         f"but the file has {size} bytes")
    return count


def _shard_check_vocab(path: str, tokens: np.ndarray, vocab_size: int) -> None:
    """Raise when any token id is outside [0, vocab_size)."""
    if tokens.size and int(tokens.max()) >= vocab_size:
        pos = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"{path}: token id {int(tokens[pos])} at position {pos} is outside the "
                         f"tokenizer's vocabulary (vocab_size {vocab_size})")


def read_shard(path, vocab_size: int | None = None) -> np.ndarray:
    """Read one shard into memory as uint16 token ids, validating header, size and (optionally) ids."""
    path = os.fspath(path)
    count = _shard_read_count(path)
    tokens = np.fromfile(path, dtype="<u2", count=count, offset=SHARD_HEADER_BYTES)
    if tokens.size != count:  # the file shrank between the size check and the read
        raise ShardError(f"{path}: truncated file: read {tokens.size} of {count} tokens")
    if vocab_size is not None:
        _shard_check_vocab(path, tokens, vocab_size)
    return tokens.astype(np.uint16, copy=False)


def write_shard(path, tokens) -> None:
    """Write token ids as one official shard (written to a temp file, then renamed into place)."""
    path = os.fspath(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise ShardError(f"{path}: tokens must be a 1-D array of integer ids, got {arr.dtype} {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << 16):
        bad = int(arr[(arr < 0) | (arr >= 1 << 16)][0])
        raise ShardError(f"{path}: token id {bad} does not fit the shard's uint16 (0..65535)")
    if arr.size >= 1 << 31:
        raise ShardError(f"{path}: {arr.size} tokens exceed the int32 header count")
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, arr.size)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)


def shard_file(data_dir, split: str, index: int | str = "[0-9]*") -> str:
    """The challenge's layout, the one place it is spelled: DATA_DIR/fineweb_{train,val}_NNNNNN.bin
    (and CaseOps sidecars, split "val_bytes"); the default index globs a split (not the sidecars)."""
    if split not in ("train", "val", "val_bytes", "*"):
        raise ValueError(f"shard split must be 'train', 'val' or 'val_bytes', got {split!r}")
    name = f"fineweb_{split}_{index:06d}.bin" if isinstance(index, int) else f"fineweb_{split}_{index}.bin"
    return os.path.join(os.fspath(data_dir), name)


def shard_paths(pattern: str) -> list[str]:
    """Sorted shard files matching a glob pattern; a clear error when none match."""
    pattern = os.fspath(pattern)
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise ShardError(f"no shard files match {pattern!r}")
    return paths


def load_val_tokens(pattern: str, vocab_size: int | None = None) -> np.ndarray:
    """All validation shards matching `pattern`, concatenated in name order (uint16)."""
    parts = [read_shard(p, vocab_size) for p in shard_paths(pattern)]
    tokens = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if tokens.size < 2:
        raise ShardError(f"{pattern}: validation needs at least 2 tokens, found {tokens.size}")
    return tokens


class DistributedTokenLoader:
    """One sequential token stream over the shards (wrapping at the end), split across ranks.

    Each `next_batch` takes (local_tokens + 1) * world_size contiguous tokens from the stream;
    rank r uses the slice [r * (local_tokens + 1), (r + 1) * (local_tokens + 1)), so every rank
    sees disjoint data and all ranks advance the stream identically (as the challenge's loader).

        loader = DistributedTokenLoader("data/datasets/fineweb10B_sp1024/fineweb_train_*.bin", rank, world_size)
        x, y = loader.next_batch(global_batch_tokens=524288, seq_len=1024, grad_accum_steps=8 // world_size)
    """

    def __init__(self, pattern: str, rank: int, world_size: int, vocab_size: int | None = None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.files = shard_paths(pattern)
        self.rank, self.world_size, self.vocab_size = rank, world_size, vocab_size
        self._open_shard(0, 0)

    def _open_shard(self, shard_index: int, position: int) -> None:
        self.shard_index, self.position = shard_index, position
        self.tokens = read_shard(self.files[shard_index], self.vocab_size)

    def _take(self, n: int) -> np.ndarray:
        """The next n tokens of the stream, crossing shard boundaries (and wrapping) as needed."""
        chunks, remaining = [], n
        while remaining > 0:
            avail = self.tokens.size - self.position
            if avail <= 0:
                self._open_shard((self.shard_index + 1) % len(self.files), 0)
                continue
            k = min(avail, remaining)
            chunks.append(self.tokens[self.position:self.position + k])
            self.position += k
            remaining -= k
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def next_batch(self, global_batch_tokens: int, seq_len: int, grad_accum_steps: int):
        """(x, y) int64 tensors of shape (local_tokens // seq_len, seq_len); y is x shifted by one."""
        local_tokens = global_batch_tokens // (self.world_size * grad_accum_steps) // seq_len * seq_len
        if local_tokens <= 0:
            raise ValueError(f"global_batch_tokens={global_batch_tokens} gives no full sequence of "
                             f"{seq_len} per rank (world_size={self.world_size}, grad_accum={grad_accum_steps})")
        span = local_tokens + 1  # one extra token so the last input has a target
        chunk = self._take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)

    def state_dict(self) -> dict:
        """Stream position as plain ints (JSON-serialisable), for exact resume."""
        return {"shard_index": int(self.shard_index), "position": int(self.position),
                "num_shards": len(self.files)}

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream from a `state_dict()`; the shard set must be the same."""
        if int(state["num_shards"]) != len(self.files):
            raise ValueError(f"loader state was saved with {state['num_shards']} shards, "
                             f"{len(self.files)} match now")
        shard_index, position = int(state["shard_index"]), int(state["position"])
        if not 0 <= shard_index < len(self.files):
            raise ValueError(f"loader state shard_index {shard_index} out of range")
        self._open_shard(shard_index, 0)
        if not 0 <= position <= self.tokens.size:
            raise ValueError(f"loader state position {position} beyond {self.files[shard_index]} "
                             f"({self.tokens.size} tokens)")
        self.position = position


# ----------------------------------------------------------------------------- bytes and bpb

@dataclass
class ByteTables:
    """Per-token-id lookup tables for the challenge's byte rule (length = table vocab size)."""
    base_bytes: np.ndarray         # int16: UTF-8 bytes of the piece without one leading "▁"
    has_leading_space: np.ndarray  # bool: piece starts with "▁" (worth 1 byte after a non-boundary)
    is_boundary: np.ndarray        # bool: control/unknown/unused id (BOS, pad, ...): 0 bytes, no space after
    bos_id: int = -1               # the tokenizer's BOS (documents are BOS + ids); -1 when unknown
    sidecar_required: bool = False  # a CaseOps tokenizer: bytes only from the val byte sidecar
    _torch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def torch_tables(self, device):
        """(base_bytes int64, has_leading_space bool, is_boundary bool) tensors on `device`, cached."""
        key = str(device)
        if key not in self._torch_cache:
            self._torch_cache[key] = tuple(
                torch.as_tensor(a.astype(np.int64) if a.dtype == np.int16 else a, device=device)
                for a in (self.base_bytes, self.has_leading_space, self.is_boundary))
        return self._torch_cache[key]


def build_byte_tables(sp, vocab_size: int | None = None) -> ByteTables:
    """Byte tables from a SentencePieceProcessor; ids past the tokenizer's vocab count as unused."""
    sp_vocab = int(sp.vocab_size())
    size = sp_vocab if vocab_size is None else int(vocab_size)
    if size < sp_vocab:
        raise TokenizerError(f"vocab_size {size} is smaller than the tokenizer's {sp_vocab} pieces")
    base_bytes = np.zeros(size, dtype=np.int16)
    has_leading_space = np.zeros(size, dtype=bool)
    is_boundary = np.ones(size, dtype=bool)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        is_boundary[i] = False
        if sp.is_byte(i):
            base_bytes[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_PIECE):
            has_leading_space[i] = True
            piece = piece[1:]
        base_bytes[i] = len(piece.encode("utf-8"))
    return ByteTables(base_bytes, has_leading_space, is_boundary, bos_id=int(sp.bos_id()), sidecar_required=is_caseops(sp))


def is_caseops(sp) -> bool:
    """True for a tokenizer that holds the four CaseOps operator symbols as pieces."""
    return all(sp.piece_to_id(op) != sp.unk_id() for op in CASEOPS_OPERATORS)


def target_bytes(prev_ids, target_ids, tables: ByteTables) -> np.ndarray:
    """UTF-8 bytes each target stands for, given the token before it (int64, shape of targets)."""
    if getattr(tables, "sidecar_required", False):
        raise TokenizerError("a CaseOps tokenizer's bytes come from the fineweb_val_bytes_*.bin sidecar")
    prev, tgt = np.asarray(prev_ids), np.asarray(target_ids)  # uint16 shards index directly, no int64 copy
    if not (np.issubdtype(prev.dtype, np.integer) and np.issubdtype(tgt.dtype, np.integer)):
        prev, tgt = prev.astype(np.int64), tgt.astype(np.int64)  # e.g. empty lists come in as float64
    size = tables.base_bytes.size
    for name, ids in (("previous", prev), ("target", tgt)):
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise ValueError(f"{name} token id outside the byte tables (size {size})")
    out = tables.base_bytes.astype(np.int64)[tgt]  # gather from an int64 table: no big astype copy
    space = tables.has_leading_space[tgt]
    space &= (~tables.is_boundary)[prev]
    out += space
    return out


def target_bytes_torch(prev_ids: torch.Tensor, target_ids: torch.Tensor, tables: ByteTables) -> torch.Tensor:
    """Torch version of `target_bytes` on the ids' device (no bounds check: ids must be < table size)."""
    base, lead, boundary = tables.torch_tables(target_ids.device)
    prev, tgt = prev_ids.long(), target_ids.long()
    return base[tgt] + (lead[tgt] & ~boundary[prev]).long()


def load_val_bytes(pattern: str, num_tokens: int) -> np.ndarray:
    """The sidecars (fineweb_val_bytes_N.bin beside each fineweb_val_N.bin) of the val shards:
    one uint16 per token, its share of the original text's UTF-8 bytes."""
    parts = []
    for path in shard_paths(pattern):
        name = os.path.basename(path)
        side = os.path.join(os.path.dirname(path), name.replace("fineweb_val_", "fineweb_val_bytes_", 1))
        if not name.startswith("fineweb_val_"):
            raise ShardError(f"{path}: only val shards (fineweb_val_N.bin) have CaseOps byte sidecars")
        if not os.path.isfile(side):
            raise ShardError(f"{side}: missing (a CaseOps tokenizer is scored from the byte sidecars)")
        parts.append(read_shard(side))
    sidecar = np.concatenate(parts)
    if sidecar.size < num_tokens:
        raise ShardError(f"{pattern}: the byte sidecars hold {sidecar.size} entries for {num_tokens} tokens")
    return sidecar[:num_tokens].astype(np.int64)


def val_target_bytes(tokens: np.ndarray, tables: ByteTables, pattern: str) -> np.ndarray:
    """Bytes of each target tokens[1:]: from the sidecar for a CaseOps tokenizer, else the byte rule."""
    if tables.sidecar_required:
        return load_val_bytes(pattern, len(tokens))[1:]
    return target_bytes(tokens[:-1], tokens[1:], tables)


def bits_per_byte(sum_nll_nats: float, sum_bytes: int) -> float:
    """val_bpb = summed negative log-likelihood (nats) / ln 2 / summed UTF-8 bytes of the targets."""
    if sum_bytes <= 0:
        raise ValueError(f"bits_per_byte needs a positive byte count, got {sum_bytes}")
    return float(sum_nll_nats) / math.log(2.0) / float(sum_bytes)


# ----------------------------------------------------------------------------- data source label

# sha256 of the first DATA_LABEL_HEAD_TOKENS tokens (uint16 little endian) of the official FineWeb
# validation set, per tokenisation we hold a copy of, and that set's token count (published manifest)
DATA_LABEL_HEAD_TOKENS = 256
FINEWEB_VAL_HEADS = {"39ce439c101f47c93b9fef33fad2c33bfe7d9ff985e3eb5768694e3687cc8490": ("sp1024", 62_021_846)}


def fineweb_val_variant(val_tokens):
    """(variant, official token count) when the tokens open like an official FineWeb val set, else None."""
    head = np.asarray(val_tokens[:DATA_LABEL_HEAD_TOKENS])
    if head.size < DATA_LABEL_HEAD_TOKENS or int(head.min()) < 0 or int(head.max()) >= 1 << 16:
        return None
    return FINEWEB_VAL_HEADS.get(hashlib.sha256(head.astype("<u2").tobytes()).hexdigest())


def _pydoc_first_document(val_tokens, sp) -> bool:
    """True when the first document of the stream, decoded, is text of CPython's pydoc topics (the
    embedded corpus); compared after NFKC and whitespace folding, as the tokenizer normalises."""
    import unicodedata
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return False
    fold = lambda text: " ".join(unicodedata.normalize("NFKC", text).split())
    ids = [int(t) for t in val_tokens[:4096]]
    bos = [i for i, t in enumerate(ids) if t == sp.bos_id()] + [len(ids)]
    doc = fold(sp.decode(ids[bos[0] + 1:bos[1]] if len(bos) > 1 else ids))[:400]
    return len(doc) >= 40 and any(doc in fold(text) for text in topics.values())


def data_source_label(val_tokens, sp=None) -> str:
    """Where scores on these validation tokens come from, decided from the tokens themselves:
    "fineweb" (the head hashes to an official val set's), "embedded_pydoc" (the first document is
    CPython's pydoc text; needs the tokenizer `sp`), else "other"."""
    if fineweb_val_variant(val_tokens) is not None:
        return "fineweb"
    if sp is not None and _pydoc_first_document(val_tokens, sp):
        return "embedded_pydoc"
    return "other"


# ----------------------------------------------------------------------------- tokenizer checks

# Texts whose byte count must come out exact. Plain probes are unchanged by NFKC and whitespace
# normalisation, so the counted bytes must equal their own UTF-8 length: a space before a
# byte-fallback character is the bare "▁" case of challenge issue #897 (which decodes to a literal
# "▁", so comparing with the decoded text alone would not catch it). Whitespace probes are changed by
# normalisation; there the count must equal the decoded text (a leading space lost after BOS).
_TOKCHECK_PLAIN_PROBES = (
    "The quick brown fox jumps over the lazy dog, 3.14159 and 2026-04-27.",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e \u4e2d\u6587 \U0001F600 \u0416\u0436 \u03bb",
    "x \u65e5 y \U0001F680 z \u00e9",
)
_TOKCHECK_SPACE_PROBES = (
    " leading space and  double  spaces, trailing space ",
    "line one\nline two\n\n\tindented",
)


def _tokcheck_structure(sp, name: str) -> None:
    """Structural reasons the per-token rule cannot be exact."""
    n_byte = sum(1 for i in range(int(sp.vocab_size())) if sp.is_byte(i))
    if n_byte != 256:
        raise TokenizerError(
            f"{name}: no byte fallback ({n_byte} of 256 <0xNN> pieces): characters outside the "
            "vocabulary become <unk>, which counts 0 bytes; train it with byte_fallback=True")
    sid = sp.piece_to_id(SPACE_PIECE)
    if sp.is_unknown(sid) or sp.is_control(sid) or sp.is_unused(sid):
        raise TokenizerError(
            f"{name}: no bare '{SPACE_PIECE}' piece: a space not merged into a word falls back to the "
            "3 UTF-8 bytes of the meta symbol, so bytes are over-counted (parameter-golf issue #897)")
    if sp.bos_id() < 0 or not sp.is_control(sp.bos_id()):
        raise TokenizerError(f"{name}: needs a BOS control piece (documents are BOS + ids)")


def _tokcheck_probe(sp, tables: ByteTables, text: str, plain: bool, name: str) -> None:
    """Encode `text` as a document (BOS + ids) and compare the counted bytes with the truth."""
    ids = [int(sp.bos_id())] + list(sp.encode(text))
    if any(sp.is_unknown(i) for i in ids[1:]):
        raise TokenizerError(f"{name}: encodes {text!r} with <unk> pieces, whose bytes count as 0")
    counted = int(target_bytes(ids[:-1], ids[1:], tables).sum())
    truth = len((text if plain else sp.decode(ids[1:])).encode("utf-8"))
    if counted != truth:
        raise TokenizerError(f"{name}: the per-token byte rule counts {counted} bytes for {text!r}, "
                             f"which has {truth}; its bpb would be wrong")


def check_tokenizer_exact(sp, name: str = "tokenizer") -> None:
    """Raise TokenizerError unless the challenge's per-token byte rule counts this tokenizer exactly."""
    _tokcheck_structure(sp, name)
    tables = build_byte_tables(sp)
    if tables.sidecar_required:
        return  # CaseOps: the per-token rule is not used (the sidecar holds the original bytes)
    for text in _TOKCHECK_PLAIN_PROBES:
        _tokcheck_probe(sp, tables, text, True, name)
    for text in _TOKCHECK_SPACE_PROBES:
        _tokcheck_probe(sp, tables, text, False, name)


def load_tokenizer(path) -> sentencepiece.SentencePieceProcessor:
    """Load a SentencePiece .model file and check that its bytes can be counted exactly."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: tokenizer file not found")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        ok = sp.load(path)
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(f"{path}: not a SentencePiece model ({exc})") from None
    if not ok:
        raise TokenizerError(f"{path}: not a SentencePiece model")
    check_tokenizer_exact(sp, name=path)
    return sp


def tokenizer_sha256(path) -> str:
    """Hex SHA-256 of a tokenizer file (recorded in logs so a score names its tokenizer)."""
    h = hashlib.sha256()
    with open(os.fspath(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
