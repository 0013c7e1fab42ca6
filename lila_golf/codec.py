"""Byte codecs for the artifact, and our own entropy coder for quantised weight symbols.

Generic codecs (`compress(data, codec)` / `decompress(data, codec)`):
    zlib    level 9
    lzma    xz container, preset 9 | PRESET_EXTREME
    zstd    level 22
    brotli  quality 11

rANS (`rans_encode(arrays)` / `rans_decode(blob)`): a static-model range-asymmetric-numeral-system
coder (Duda 2013) for integer matrices, e.g. int6 per-row weights. Model: K frequency tables shared
by all rows of all the arrays; each row is assigned the table under which it codes shortest (tables
fitted by a few rounds of k-means in KL divergence), so rows of different spread get different
statistics without paying one table per row. Coding runs `lanes` interleaved rANS states with
32-bit state and 16-bit renormalisation, one numpy step per `lanes` symbols, so millions of symbols
take about a second.

rANS stream layout (little endian):
    b"RANS" u8 version | u8 scale_bits | u16 num_tables | u32 lanes | i32 sym_min | u16 alphabet
    u32 num_arrays | per array: u32 rows, u32 cols
    u32 len + zlib(row table ids u8 (one per row, arrays in order)
                   + num_tables * alphabet u16 frequencies (each table sums to 2^scale_bits))
    u32 num_words + num_words u16 words          renormalisation output, in decoding order
    lanes u32 final states                       the decoder's starting states
Symbols are read row-major, array after array; symbol i goes to lane i % lanes, step i // lanes.
"""
import lzma
import struct
import zlib

import numpy as np

CODEC_NAMES = ("zlib", "lzma", "zstd", "brotli")
RANS_SCALE_BITS = 15           # probabilities quantised to 1/32768; a freq fits u16
RANS_STATE_LOW = 1 << 16       # rANS state lives in [2^16, 2^32)
RANS_MAX_TABLES = 32
RANS_MAX_LANES = 4096          # 4 bytes of final state per lane
RANS_KMEANS_ROUNDS = 8
_RANS_MAGIC = b"RANS"
_RANS_VERSION = 1


class CodecError(ValueError):
    """Unknown codec, or data that does not decode."""


def compress(data: bytes, codec: str) -> bytes:
    """Compress bytes with a named codec at its strongest standard setting (see module doc)."""
    if codec == "zlib":
        return zlib.compress(data, 9)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=22).compress(data)
    if codec == "brotli":
        import brotli
        return brotli.compress(data, quality=11)
    raise CodecError(f"unknown codec {codec!r}: expected one of {CODEC_NAMES}")


def decompress(data: bytes, codec: str) -> bytes:
    """Inverse of compress; corrupt or truncated input raises CodecError naming the codec."""
    if codec not in CODEC_NAMES:
        raise CodecError(f"unknown codec {codec!r}: expected one of {CODEC_NAMES}")
    try:
        if codec == "zlib":
            return zlib.decompress(data)
        if codec == "lzma":
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
        if codec == "zstd":
            import zstandard
            # streaming reader: also works when the frame does not record its content size
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out = dobj.decompress(data)
            if not dobj.eof or dobj.unused_data:
                raise CodecError(f"corrupt or truncated zstd data ({len(data)} bytes): frame incomplete")
            return out
        import brotli
        return brotli.decompress(data)
    except CodecError:
        raise
    except Exception as exc:  # each library has its own error type; report them uniformly
        raise CodecError(f"corrupt or truncated {codec} data ({len(data)} bytes): {exc}") from exc


# ---------------------------------------------------------------------------------------------
# rANS model: frequency tables and the assignment of rows to them
# ---------------------------------------------------------------------------------------------

def _rans_row_counts(rows: np.ndarray, alphabet: int) -> np.ndarray:
    """rows (R, C) ints in [0, alphabet) -> counts (R, alphabet) float64."""
    R = rows.shape[0]
    idx = (rows.astype(np.int64) + alphabet * np.arange(R)[:, None]).ravel()
    return np.bincount(idx, minlength=R * alphabet).reshape(R, alphabet).astype(np.float64)


def _rans_quantise_freqs(probs: np.ndarray, scale_bits: int) -> np.ndarray:
    """probs (K, A) -> integer freqs (K, A) summing to 2^scale_bits per table; every symbol with
    p > 0 gets >= 1, symbols with p == 0 get 0 (they can never be coded with that table)."""
    M = 1 << scale_bits
    A = probs.shape[1]
    if A > M // 2:
        raise CodecError(f"rANS alphabet of {A} symbols is too large for 2^{scale_bits} slots")
    freqs = np.where(probs > 0, np.maximum(1, np.floor(probs * (M - A)).astype(np.int64)), 0)
    # hand the rounding remainder to each table's most likely symbol
    fix = M - freqs.sum(axis=1)
    freqs[np.arange(freqs.shape[0]), freqs.argmax(axis=1)] += fix
    return freqs


def _rans_code_lengths(counts: np.ndarray, freqs: np.ndarray, scale_bits: int) -> np.ndarray:
    """Bits for each row under each table: (R, A) x (K, A) -> (R, K)."""
    return counts @ (scale_bits - np.log2(np.maximum(freqs, 1e-3))).T


def _rans_pooled_probs(counts: np.ndarray, assign: np.ndarray, K: int, smooth: bool) -> np.ndarray:
    """Symbol distribution of each class from the counts of its rows: (K, A)."""
    pooled = np.zeros((K, counts.shape[1]))
    np.add.at(pooled, assign, counts)
    if smooth:  # while fitting, keep every symbol possible so rows can move between classes
        pooled += 0.5 / counts.shape[1] + pooled.sum(axis=1, keepdims=True) * 1e-6
    return pooled / np.maximum(pooled.sum(axis=1, keepdims=True), 1e-300)


def _rans_fit_tables(counts: np.ndarray, num_tables: int, scale_bits: int):
    """k-means over rows in code length: returns (freqs (K, A) int64, row table ids (R,))."""
    R, A = counts.shape
    # about 512 symbols per table entry, so the tables stay a small part of the stream
    K = int(max(1, min(num_tables, R, counts.sum() // (512 * A))))
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    row_h = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)).sum(axis=1)
    assign = np.zeros(R, dtype=np.int64)  # start: K groups of rows ordered by their entropy
    assign[np.argsort(row_h, kind="stable")] = np.arange(R) * K // R
    for _ in range(RANS_KMEANS_ROUNDS):
        freqs = _rans_quantise_freqs(_rans_pooled_probs(counts, assign, K, True), scale_bits)
        new = _rans_code_lengths(counts, freqs, scale_bits).argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
    # final tables: drop empty classes, and give slots only to symbols the class's rows use
    used, assign = np.unique(assign, return_inverse=True)
    freqs = _rans_quantise_freqs(_rans_pooled_probs(counts, assign, used.size, False), scale_bits)
    return freqs, assign.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# rANS core: interleaved lanes, one vectorised numpy step per `lanes` symbols
# ---------------------------------------------------------------------------------------------

def _rans_encode_core(f_pos: np.ndarray, c_pos: np.ndarray, scale_bits: int):
    """f_pos, c_pos (T, L) uint64 freq/cum of each symbol -> (u16 words in decoding order, states)."""
    T, L = f_pos.shape
    x = np.full(L, RANS_STATE_LOW, dtype=np.uint64)
    chunks = []
    shift = np.uint64(32 - scale_bits)
    sb, s16, low16 = np.uint64(scale_bits), np.uint64(16), np.uint64(0xFFFF)
    for t in range(T - 1, -1, -1):  # rANS is LIFO: encode backwards, decode forwards
        f = f_pos[t]
        m = x >= (f << shift)  # renormalise so that the encoded state stays below 2^32
        if m.any():
            chunks.append((x[m] & low16).astype(np.uint16))
            x = np.where(m, x >> s16, x)
        else:
            chunks.append(None)
        q, r = np.divmod(x, f)
        x = (q << sb) + r + c_pos[t]
    chunks = [c for c in reversed(chunks) if c is not None]
    words = np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)
    return words, x.astype(np.uint32)


def _rans_decode_core(tid_pos, states, words, freqs, cums, lut, scale_bits, alphabet):
    """Inverse of _rans_encode_core; tid_pos (T, L) table ids (pad table = K) -> symbols (T, L)."""
    T, L = tid_pos.shape
    x = states.astype(np.uint64)
    out = np.empty((T, L), dtype=np.int64)
    mask, sb, s16 = np.uint64((1 << scale_bits) - 1), np.uint64(scale_bits), np.uint64(16)
    M = 1 << scale_bits
    ptr, nwords = 0, words.shape[0]
    for t in range(T):
        tid = tid_pos[t]
        slot = x & mask
        s = lut[tid * M + slot.astype(np.int64)]
        idx = tid * alphabet + s
        x = freqs[idx] * (x >> sb) + slot - cums[idx]
        m = x < RANS_STATE_LOW
        n = int(m.sum())
        if n:
            if ptr + n > nwords:
                raise CodecError("corrupt rANS stream: ran out of renormalisation words")
            x[m] = (x[m] << s16) | words[ptr:ptr + n].astype(np.uint64)
            ptr += n
        out[t] = s
    if ptr != nwords or np.any(x != RANS_STATE_LOW):
        raise CodecError("corrupt rANS stream: decoder did not end in the initial state")
    return out


def _rans_tables_with_pad(freqs: np.ndarray, scale_bits: int):
    """Append the pad table (symbol 0 with all 2^scale_bits slots: coding it costs 0 bits and
    leaves the state unchanged) -> flat freqs, flat cums, flat slot->symbol lookup."""
    K, A = freqs.shape
    M = 1 << scale_bits
    pad = np.zeros((1, A), dtype=np.int64)
    pad[0, 0] = M
    full = np.concatenate([freqs.astype(np.int64), pad])
    cums = np.concatenate([np.zeros((K + 1, 1), np.int64), np.cumsum(full, axis=1)[:, :-1]], axis=1)
    lut = np.repeat(np.tile(np.arange(A, dtype=np.int64), K + 1), full.ravel())  # (K+1) * M
    return full.ravel().astype(np.uint64), cums.ravel().astype(np.uint64), lut


def _rans_lane_layout(n: int, lanes: int | None) -> tuple[int, int]:
    """(lanes, steps): 8,192+ symbols per lane so the 4-byte final states stay under ~0.1%."""
    if lanes is None:
        lanes = int(min(RANS_MAX_LANES, max(1, n // 8192)))
    return lanes, max(1, -(-n // lanes))


def _rans_padded(values: np.ndarray, steps: int, lanes: int, fill) -> np.ndarray:
    out = np.full(steps * lanes, fill, dtype=values.dtype)
    out[:values.shape[0]] = values
    return out.reshape(steps, lanes)


def rans_encode(arrays, num_tables: int = RANS_MAX_TABLES, lanes: int | None = None,
                scale_bits: int = RANS_SCALE_BITS) -> bytes:
    """Entropy-code a list of integer arrays (each viewed as (shape[0], -1) rows; 1-D = one row)
    with per-row-class static tables. Exact: rans_decode returns the same values as int64 arrays
    of shape (rows, cols)."""
    mats = [_rans_as_rows(np.asarray(a)) for a in arrays]
    flat = np.concatenate([m.ravel() for m in mats]) if mats else np.zeros(0, np.int64)
    sym_min = int(flat.min()) if flat.size else 0
    alphabet = int(flat.max()) - sym_min + 1 if flat.size else 1
    rows_all = [m - sym_min for m in mats]
    counts = np.concatenate([_rans_row_counts(m, alphabet) for m in rows_all]) \
        if mats else np.zeros((0, alphabet))
    if counts.shape[0]:
        freqs, row_tid = _rans_fit_tables(counts, num_tables, scale_bits)
    else:
        freqs, row_tid = _rans_quantise_freqs(np.ones((1, alphabet)) / alphabet, scale_bits), \
            np.zeros(0, np.int64)
    K = freqs.shape[0]
    lanes, steps = _rans_lane_layout(flat.size, lanes)
    f_flat, c_flat, _ = _rans_tables_with_pad(freqs, scale_bits)
    tid_pos = _rans_symbol_tables(mats, row_tid)
    idx = tid_pos * alphabet + (flat - sym_min)
    pad_idx = K * alphabet  # pad table, symbol 0
    f_pos = _rans_padded(f_flat[idx], steps, lanes, f_flat[pad_idx])
    c_pos = _rans_padded(c_flat[idx], steps, lanes, np.uint64(0))
    words, states = _rans_encode_core(f_pos, c_pos, scale_bits)
    head = _RANS_MAGIC + struct.pack("<BBHIiHI", _RANS_VERSION, scale_bits, K, lanes, sym_min,
                                     alphabet, len(mats))
    shapes = b"".join(struct.pack("<II", *m.shape) for m in mats)
    side = zlib.compress(row_tid.astype(np.uint8).tobytes() + freqs.astype("<u2").tobytes(), 9)
    return b"".join([head, shapes, struct.pack("<I", len(side)), side, struct.pack("<I", words.size),
                     words.astype("<u2").tobytes(), states.astype("<u4").tobytes()])


def _rans_as_rows(a: np.ndarray) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.integer):
        raise CodecError(f"rANS codes integer arrays, got dtype {a.dtype}")
    a = a.astype(np.int64)
    return a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)


def _rans_symbol_tables(mats, row_tid: np.ndarray) -> np.ndarray:
    """Per-symbol table id (N,), from the table id of each row, arrays in order."""
    parts, r0 = [], 0
    for m in mats:
        parts.append(np.repeat(row_tid[r0:r0 + m.shape[0]], m.shape[1]))
        r0 += m.shape[0]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class _RansReader:
    """Bounds-checked reads from a rANS blob; any overrun is a CodecError."""

    def __init__(self, blob: bytes):
        self.blob, self.pos = blob, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.blob):
            raise CodecError(f"truncated rANS stream ({len(self.blob)} bytes)")
        out = self.blob[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def rans_decode(blob: bytes) -> list[np.ndarray]:
    """Inverse of rans_encode: list of int64 arrays of shape (rows, cols)."""
    rd = _RansReader(blob)
    if rd.take(4) != _RANS_MAGIC:
        raise CodecError("not a rANS stream (bad magic)")
    version, scale_bits, K, lanes, sym_min, alphabet, n_arrays = rd.unpack("<BBHIiHI")
    if version != _RANS_VERSION or not 1 <= scale_bits <= 16 or lanes < 1 or K < 1:
        raise CodecError(f"unsupported or corrupt rANS header (version {version})")
    shapes = [rd.unpack("<II") for _ in range(n_arrays)]
    n_rows = sum(r for r, _ in shapes)
    try:
        side = zlib.decompress(rd.take(rd.unpack("<I")[0]))
    except zlib.error as exc:
        raise CodecError(f"corrupt rANS side data: {exc}") from exc
    if len(side) != n_rows + 2 * K * alphabet:
        raise CodecError("corrupt rANS stream: side data has the wrong length")
    row_tid = np.frombuffer(side[:n_rows], np.uint8)
    freqs = np.frombuffer(side[n_rows:], "<u2").astype(np.int64).reshape(K, alphabet)
    words = np.frombuffer(rd.take(2 * rd.unpack("<I")[0]), "<u2")
    states = np.frombuffer(rd.take(4 * lanes), "<u4")
    if np.any(row_tid >= K) or np.any(freqs.sum(1) != 1 << scale_bits):
        raise CodecError("corrupt rANS stream: tables or row ids inconsistent")
    n = sum(r * c for r, c in shapes)
    steps = max(1, -(-n // lanes))
    f_flat, c_flat, lut = _rans_tables_with_pad(freqs, scale_bits)
    tid_pos = _rans_padded(_rans_symbol_tables([np.empty((r, c), np.int8) for r, c in shapes],
                                               row_tid.astype(np.int64)), steps, lanes, K)
    sym = _rans_decode_core(tid_pos, states, words, f_flat, c_flat, lut, scale_bits, alphabet)
    flat = sym.ravel()[:n] + sym_min
    out, pos = [], 0
    for r, c in shapes:
        out.append(flat[pos:pos + r * c].reshape(r, c))
        pos += r * c
    return out
