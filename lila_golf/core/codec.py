"""Byte codecs for the artifact, and our own entropy coder for quantised weight symbols.

Generic codecs (`compress(data, codec)` / `decompress(data, codec)`):
    zlib    level 9
    lzma    xz container, preset 9 | PRESET_EXTREME
    zstd    level 22
    brotli  quality 11

rANS (`rans_encode(arrays)` / `rans_decode(blob)`): a static-model range-asymmetric-numeral-system
coder (Duda 2013) for integer matrices, e.g. int6 per-row weights. Model: a "ladder" of K frequency
tables ordered by spread, shared by all the arrays; symbol (r, c) of an array is coded with table
clip(row_id[r] + col_shift[c]), i.e. its log-scale is a row term plus a column term (output rows and
input columns of a weight matrix both carry a scale). Ids, shifts and tables are fitted by
coordinate descent on the code length. On synthetic row x column scaled Laplace symbols the coded
size is within ~1% of the code length under the true distributions. Coding runs `lanes`
interleaved rANS states (32-bit state, 16-bit renormalisation), one numpy step per `lanes`
symbols: 26M symbols encode in ~20 s (mostly model fitting) and decode in ~2-3 s on 2 CPU cores.

rANS stream layout (little endian):
    b"RANS" u8 version | u8 scale_bits | u16 num_tables | u32 lanes | i32 sym_min | u16 alphabet
    u32 num_arrays | per array: u32 rows, u32 cols
    u32 len + zlib(row ids u8 (one per row, arrays in order)
                   + column shifts u8 (shift + 128, one per column, arrays in order)
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
RANS_FIT_ROUNDS = 3
RANS_SYMBOLS_PER_ENTRY = 2048  # tables: about one table entry per 2,048 coded symbols, at most 32
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


def decompress(data: bytes, codec: str, max_bytes: int | None = None) -> bytes:
    """Inverse of compress; corrupt or truncated input raises CodecError naming the codec.
    max_bytes: stop and raise as soon as the output would pass it (a small input can expand to
    gigabytes), so at most about max_bytes are ever held; None = no bound."""
    if codec not in CODEC_NAMES:
        raise CodecError(f"unknown codec {codec!r}: expected one of {CODEC_NAMES}")
    try:
        if max_bytes is not None:
            return _decompress_bounded(data, codec, max_bytes)
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


def _codec_too_large(codec: str, n_in: int, max_bytes: int) -> CodecError:
    return CodecError(f"{codec} data ({n_in} bytes) expands past {max_bytes} bytes, the size it was declared "
                      f"with: refused before decoding further")


def _decompress_bounded(data: bytes, codec: str, max_bytes: int) -> bytes:
    """decompress() that never produces more than max_bytes + one buffer of output."""
    if codec in ("zlib", "lzma"):
        dec = zlib.decompressobj() if codec == "zlib" else lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        out = dec.decompress(data, max_bytes + 1)
        if len(out) > max_bytes:
            raise _codec_too_large(codec, len(data), max_bytes)
        if not dec.eof or (dec.unconsumed_tail if codec == "zlib" else b"") or dec.unused_data:
            raise CodecError(f"corrupt or truncated {codec} data ({len(data)} bytes): stream incomplete or trailing bytes")
        return out
    if codec == "zstd":
        import io
        import zstandard
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False) as reader:
            out = reader.read(max_bytes + 1)
        if len(out) > max_bytes:
            raise _codec_too_large(codec, len(data), max_bytes)
        return decompress(data, codec)  # within the bound: the checked whole-frame decode
    import brotli
    dec, out = brotli.Decompressor(), []
    chunk, total = dec.process(data, output_buffer_limit=max_bytes + 1), 0
    while True:  # the limit caps each call's buffer; keep draining with empty input
        total += len(chunk)
        out.append(chunk)
        if total > max_bytes:
            raise _codec_too_large(codec, len(data), max_bytes)
        if dec.is_finished() or dec.can_accept_more_data():
            break
        chunk = dec.process(b"", output_buffer_limit=max_bytes + 1 - total)
    if not dec.is_finished():
        raise CodecError(f"corrupt or truncated brotli data ({len(data)} bytes): stream incomplete")
    return b"".join(out)


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


def _rans_ladder_ids(row_ids: np.ndarray, col_shift: np.ndarray, K: int) -> np.ndarray:
    """Table of each symbol of an (R, C) array: clip(row id + column shift) on the ladder (R, C)."""
    return np.clip(row_ids[:, None] + col_shift[None, :], 0, K - 1)


def _rans_pooled_probs(mats, row_ids, col_shifts, K: int, A: int, smooth: bool) -> np.ndarray:
    """Symbol distribution of each ladder table from the symbols assigned to it: (K, A)."""
    pooled = np.zeros(K * A)
    for m, a, b in zip(mats, row_ids, col_shifts):
        idx = (_rans_ladder_ids(a, b, K) * A + m).ravel()
        pooled += np.bincount(idx, minlength=K * A)
    pooled = pooled.reshape(K, A)
    if smooth:  # while fitting, keep every symbol possible so rows and columns can move
        pooled += 0.5 / A + pooled.sum(axis=1, keepdims=True) * 1e-6
    empty = pooled.sum(axis=1) == 0
    pooled[empty] = 1.0  # a table nobody uses: any valid distribution
    return pooled / pooled.sum(axis=1, keepdims=True)


def _rans_offset_cost(m: np.ndarray, shift: np.ndarray, candidates: np.ndarray,
                      bits: np.ndarray) -> np.ndarray:
    """Bits to code each row of m (R, C) for each candidate base a, when column c uses ladder
    table clip(a + shift[c]): (R, len(candidates)). bits (K, A) = code length per table/symbol."""
    K, A = bits.shape
    values, v_idx = np.unique(shift, return_inverse=True)  # (V,), (C,)
    R, V = m.shape[0], values.size
    # counts[r, v, s]: how often row r holds symbol s in a column with shift values[v]
    idx = (np.arange(R)[:, None] * (V * A) + v_idx[None, :] * A + m).ravel()
    counts = np.bincount(idx, minlength=R * V * A).reshape(R, V * A).astype(np.float32)
    table = np.clip(candidates[None, :] + values[:, None], 0, K - 1)  # (V, n_cand)
    per_v = bits.T[:, table].transpose(1, 0, 2).reshape(V * A, candidates.size)  # [v*A+s, cand]
    return counts @ per_v


def _rans_entropy_rank(counts_list, K: int) -> np.ndarray:
    """Rank of each row's empirical entropy, scaled to [0, K/2): (total rows,) int64."""
    counts = np.concatenate(counts_list)
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    h = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)).sum(axis=1)
    rank = np.zeros(len(h), dtype=np.int64)
    rank[np.argsort(h, kind="stable")] = np.arange(len(h)) * max(1, K // 2) // max(1, len(h))
    return rank


def _rans_fit_ladder(mats, num_tables: int):
    """Fit the model: K tables ordered by spread (a "ladder"); symbol (r, c) of an array uses
    table clip(row_id[r] + col_shift[c]), i.e. its log-scale is a row term plus a column term
    (rows and input columns of a weight matrix both carry a scale). Coordinate descent on the
    code length: rows given columns, columns given rows, tables refitted in between.
    Returns (probs (K, A), row ids per array, column shifts per array)."""
    n = sum(m.size for m in mats)
    if n == 0:
        return np.ones((1, 1)), [np.zeros(m.shape[0], np.int64) for m in mats], \
            [np.zeros(m.shape[1], np.int64) for m in mats]
    A = int(max(int(m.max()) for m in mats if m.size) + 1)
    K = int(max(1, min(num_tables, n // (RANS_SYMBOLS_PER_ENTRY * A))))
    # start: row id = rank of the row's own entropy, column shift = rank of the column's, each
    # spread over half the ladder, so that row + column covers all K tables
    splits_r = np.cumsum([m.shape[0] for m in mats])[:-1]
    splits_c = np.cumsum([m.shape[1] for m in mats])[:-1]
    row_ids = np.split(_rans_entropy_rank([_rans_row_counts(m, A) for m in mats], K), splits_r)
    col_shifts = np.split(_rans_entropy_rank([_rans_row_counts(m.T, A) for m in mats], K), splits_c)
    row_cands = np.arange(K)
    col_cands = np.arange(-(K // 2), K // 2 + 1)
    for _ in range(RANS_FIT_ROUNDS):
        bits = -np.log2(_rans_pooled_probs(mats, row_ids, col_shifts, K, A, True))
        row_ids = [row_cands[_rans_offset_cost(m, b, row_cands, bits).argmin(axis=1)]
                   for m, b in zip(mats, col_shifts)]
        bits = -np.log2(_rans_pooled_probs(mats, row_ids, col_shifts, K, A, True))
        col_shifts = [col_cands[_rans_offset_cost(m.T, a, col_cands, bits).argmin(axis=1)]
                      for m, a in zip(mats, row_ids)]
    return _rans_pooled_probs(mats, row_ids, col_shifts, K, A, False), row_ids, col_shifts


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
    """Entropy-code a list of integer arrays (each viewed as (shape[0], -1); 1-D = one row) with
    the row x column ladder model (see _rans_fit_ladder). Exact: rans_decode returns the same
    values as int64 arrays of shape (rows, cols)."""
    mats = [_rans_as_rows(np.asarray(a)) for a in arrays]
    nonempty = [m for m in mats if m.size]
    sym_min = int(min(int(m.min()) for m in nonempty)) if nonempty else 0
    mats = [m - sym_min for m in mats]
    probs, row_ids, col_shifts = _rans_fit_ladder(mats, num_tables)
    K, alphabet = probs.shape
    freqs = _rans_quantise_freqs(probs, scale_bits)
    n = sum(m.size for m in mats)
    lanes, steps = _rans_lane_layout(n, lanes)
    f_flat, c_flat, _ = _rans_tables_with_pad(freqs, scale_bits)
    idx = _rans_symbol_tables(mats, row_ids, col_shifts, K) * alphabet
    idx[:n] += np.concatenate([m.ravel() for m in mats]) if mats else 0
    f_pos = _rans_padded(f_flat[idx], steps, lanes, f_flat[K * alphabet])  # pad: table K, symbol 0
    c_pos = _rans_padded(c_flat[idx], steps, lanes, 0)
    words, states = _rans_encode_core(f_pos, c_pos, scale_bits)
    head = _RANS_MAGIC + struct.pack("<BBHIiHI", _RANS_VERSION, scale_bits, K, lanes, sym_min,
                                     alphabet, len(mats))
    shapes = b"".join(struct.pack("<II", *m.shape) for m in mats)
    side = b"".join([np.concatenate(row_ids or [np.zeros(0)]).astype(np.uint8).tobytes(),
                     (np.concatenate(col_shifts or [np.zeros(0)]) + 128).astype(np.uint8).tobytes(),
                     freqs.astype("<u2").tobytes()])
    side = zlib.compress(side, 9)
    return b"".join([head, shapes, struct.pack("<I", len(side)), side, struct.pack("<I", words.size),
                     words.astype("<u2").tobytes(), states.astype("<u4").tobytes()])


def _rans_as_rows(a: np.ndarray) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.integer):
        raise CodecError(f"rANS codes integer arrays, got dtype {a.dtype}")
    a = a.astype(np.int64)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) if a.ndim >= 2 else a.reshape(1, -1)


def _rans_symbol_tables(mats, row_ids, col_shifts, K: int) -> np.ndarray:
    """Table id of every symbol, arrays in order, row-major: (N,) int64."""
    parts = [_rans_ladder_ids(a, b, K).ravel() for m, a, b in zip(mats, row_ids, col_shifts)]
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


def rans_decode(blob: bytes, max_symbols: int | None = None) -> list[np.ndarray]:
    """Inverse of rans_encode: list of int64 arrays of shape (rows, cols). max_symbols: refuse a
    stream declaring more symbols (or row and column ids for more) before allocating anything."""
    rd = _RansReader(blob)
    if rd.take(4) != _RANS_MAGIC:
        raise CodecError("not a rANS stream (bad magic)")
    version, scale_bits, K, lanes, sym_min, alphabet, n_arrays = rd.unpack("<BBHIiHI")
    if version != _RANS_VERSION or not 1 <= scale_bits <= 16 or lanes < 1 or K < 1:
        raise CodecError(f"unsupported or corrupt rANS header (version {version})")
    if K > RANS_MAX_TABLES or lanes > RANS_MAX_LANES or alphabet > (1 << scale_bits) // 2:
        raise CodecError(f"corrupt rANS header: {K} tables, {lanes} lanes, alphabet {alphabet} exceed the coder's caps")
    shapes = [rd.unpack("<II") for _ in range(n_arrays)]
    n_rows, n_cols = sum(r for r, _ in shapes), sum(c for _, c in shapes)
    n = sum(r * c for r, c in shapes)
    if max_symbols is not None and (n > max_symbols or n_rows + n_cols > max_symbols + n_arrays):
        raise CodecError(f"rANS stream declares {n} symbols in {n_arrays} arrays, more than the {max_symbols} "
                         f"it may hold: refused before decoding")
    side_len = n_rows + n_cols + 2 * K * alphabet
    side = decompress(rd.take(rd.unpack("<I")[0]), "zlib", max_bytes=side_len)
    if len(side) != side_len:
        raise CodecError("corrupt rANS stream: side data has the wrong length")
    ids = np.frombuffer(side[:n_rows + n_cols], np.uint8).astype(np.int64)
    row_ids = np.split(ids[:n_rows], np.cumsum([r for r, _ in shapes])[:-1])
    col_shifts = np.split(ids[n_rows:] - 128, np.cumsum([c for _, c in shapes])[:-1])
    freqs = np.frombuffer(side[n_rows + n_cols:], "<u2").astype(np.int64).reshape(K, alphabet)
    words = np.frombuffer(rd.take(2 * rd.unpack("<I")[0]), "<u2")
    states = np.frombuffer(rd.take(4 * lanes), "<u4")
    if np.any(ids[:n_rows] >= K) or np.any(freqs.sum(1) != 1 << scale_bits):
        raise CodecError("corrupt rANS stream: tables or row ids inconsistent")
    steps = max(1, -(-n // lanes))
    f_flat, c_flat, lut = _rans_tables_with_pad(freqs, scale_bits)
    tid_pos = _rans_padded(_rans_symbol_tables(shapes, row_ids, col_shifts, K), steps, lanes, K)
    sym = _rans_decode_core(tid_pos, states, words, f_flat, c_flat, lut, scale_bits, alphabet)
    flat = sym.ravel()[:n] + sym_min
    out, pos = [], 0
    for r, c in shapes:
        out.append(flat[pos:pos + r * c].reshape(r, c))
        pos += r * c
    return out
