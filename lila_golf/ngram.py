"""Score-first backoff n-gram model over token ids: a true distribution over the whole vocabulary.

    lm = BackoffNgram(vocab_size=1024, max_order=10)
    logp = lm.logprob(window, start)        # log p(window[i] | window[:i]) for i >= start, counts as now
    dist = lm.distributions(window, [i])    # (1, V) full distributions, same numbers as logprob
    lm.update(window, start)                # only now count the n-grams whose target is window[i >= start]

Counts come only from tokens added by `update`; a caller scores a chunk first and updates after
(scoring.NgramScorer does this), so every probability uses already-scored tokens only.

The distribution (interpolated backoff over context lengths 0..max_order-1, i.e. n-gram orders
1..max_order, on top of the uniform 1/V):

    p_0(x)     = 1 / V
    p_k(x | h) = (max(c(h,x) - d, 0) + (d + beta) * u(h) * p_{k-1}(x | h')) / (c(h) + beta * u(h))

with h the last k tokens, h' the last k-1, c(h) the number of counted positions whose context was
h, c(h,x) those followed by x, u(h) the number of distinct x seen after h. d = 0 is Witten-Bell
(escape mass beta*u/(c+beta*u)); beta = 0 is interpolated absolute discounting. Because
sum_x max(c(h,x) - d, 0) = c(h) - d*u(h) (every seen x has c >= 1 >= d), each level sums to exactly
1 whenever the level below does. If c(h) = 0 the level is skipped (p_k = p_{k-1}), and so are all
longer contexts of that position (they extend h, so were never counted either; the full-distribution
path applies the same rule, so both paths give the same numbers bit for bit).

Keys and hash collisions. Context lengths 0 and 1 use exact dense tables. Longer contexts are
hashed to 64 bits g(h) (a multiply-xor chain over the context tokens); the context table is keyed
by g(h) and the pair table by g(h) with the target id in the low bits, which are cleared from g(h)
first, so the target never enters the hashed part. A collision g(h1) = g(h2) therefore only merges
two contexts into one: c(h), u(h) and every c(h,x) are then the sums over both, which are still
consistent counts of one event set, so the formula above still sums to exactly 1. Two different
targets can never share a pair entry. (The disallowed records instead hashed the target into
the same bucket space as the context and read p = c(bucket)/c(ctx bucket) for the realised token only.)

Storage: open addressing with linear probing in numpy arrays (load <= 0.5, doubling), all operations
vectorised over a chunk of positions.
"""
import numpy as np

_NGRAM_TOPBIT = np.uint64(1 << 63)     # forced on in every hashed key: key 0 marks an empty slot
_NGRAM_FIB = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier for the slot index
_NGRAM_SEED = np.uint64(0x243F6A8885A308D3)
# one odd multiplier per context length, so contexts of different lengths hash independently
_NGRAM_MULTS = tuple(np.uint64((0x9E3779B97F4A7C15 * (2 * k + 1) + 0x632BE59BD9B4E019 * k) % (1 << 64) | 1)
                     for k in range(64))


class NgramHashTable:
    """Open-addressing map from nonzero uint64 keys to slots, with uint32 `count` (and `distinct`)."""

    def __init__(self, log2_capacity: int = 12, with_distinct: bool = False):
        self.with_distinct = with_distinct
        self._alloc(log2_capacity)
        self.used_bound = 0  # upper bound on occupied slots; recounted exactly before growing

    def _alloc(self, log2_capacity: int) -> None:
        self.log2_capacity = log2_capacity
        cap = 1 << log2_capacity
        self.keys = np.zeros(cap, dtype=np.uint64)
        self.count = np.zeros(cap, dtype=np.uint32)
        self.distinct = np.zeros(cap, dtype=np.uint32) if self.with_distinct else None

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _NGRAM_FIB) >> np.uint64(64 - self.log2_capacity)).astype(np.int64)

    def find(self, keys: np.ndarray, insert: bool = False) -> np.ndarray:
        """Slot of each key (int64); -1 for absent keys unless `insert`, which claims empty slots."""
        if insert:
            self._reserve(len(keys))
        mask = (1 << self.log2_capacity) - 1
        out = np.full(len(keys), -1, dtype=np.int64)
        pending = np.arange(len(keys))
        pkeys, slot = keys, self._home(keys)
        while pending.size:
            cur = self.keys[slot]
            if insert:
                empty = cur == 0
                if empty.any():
                    # racing claims: one writer wins each slot; equal keys probe in lockstep and share it
                    self.keys[slot[empty]] = pkeys[empty]
                    cur = self.keys[slot]
            hit = cur == pkeys
            out[pending[hit]] = slot[hit]
            go_on = ~hit if insert else ~hit & (cur != 0)
            pending, pkeys, slot = pending[go_on], pkeys[go_on], (slot[go_on] + 1) & mask
        return out

    def _reserve(self, n_new: int) -> None:
        cap = 1 << self.log2_capacity
        self.used_bound += n_new
        if self.used_bound <= cap // 2:
            return
        used = int(np.count_nonzero(self.keys))
        self.used_bound = used + n_new
        if used + n_new > cap * 7 // 16:  # hysteresis: grow a little early so exact recounts stay rare
            bits = self.log2_capacity + 1
            while (used + n_new) > (1 << bits) // 4:
                bits += 1
            self._rehash(bits)

    def _rehash(self, log2_capacity: int) -> None:
        occupied = np.nonzero(self.keys)[0]
        keys, count = self.keys[occupied], self.count[occupied]
        distinct = self.distinct[occupied] if self.with_distinct else None
        self._alloc(log2_capacity)
        self.used_bound = len(keys)
        slots = self.find(keys, insert=True)
        self.count[slots] = count
        if distinct is not None:
            self.distinct[slots] = distinct

    def nbytes(self) -> int:
        return self.keys.nbytes + self.count.nbytes + (self.distinct.nbytes if self.with_distinct else 0)


class NgramDenseTable:
    """Exact table indexed by the key itself (for short contexts): same interface as NgramHashTable."""

    def __init__(self, size: int, with_distinct: bool = False):
        self.count = np.zeros(size, dtype=np.uint32)
        self.distinct = np.zeros(size, dtype=np.uint32) if with_distinct else None

    def find(self, keys: np.ndarray, insert: bool = False) -> np.ndarray:
        return keys.astype(np.int64, copy=False)

    def nbytes(self) -> int:
        return self.count.nbytes + (self.distinct.nbytes if self.distinct is not None else 0)


class BackoffNgram:
    """Interpolated backoff n-gram over token ids (see the module docstring for the formula)."""

    def __init__(self, vocab_size: int, max_order: int = 10, discount: float = 0.5, beta: float = 3.0):
        if vocab_size < 2 or max_order < 1:
            raise ValueError(f"BackoffNgram needs vocab_size >= 2 and max_order >= 1, got {vocab_size}, {max_order}")
        if not (0.0 <= discount <= 1.0) or beta < 0.0 or discount + beta <= 0.0:
            raise ValueError(f"BackoffNgram needs 0 <= discount <= 1, beta >= 0, discount + beta > 0; "
                             f"got discount={discount}, beta={beta}")
        self.vocab_size, self.max_order = vocab_size, max_order
        self.discount, self.beta = float(discount), float(beta)
        self.xbits = int(vocab_size).bit_length()  # low key bits that hold the target id
        self.ctx_tables, self.pair_tables = [], []
        for k in range(max_order):  # k = context length
            if k <= 1:
                n_ctx = vocab_size ** k
                self.ctx_tables.append(NgramDenseTable(n_ctx, with_distinct=True))
                self.pair_tables.append(NgramDenseTable(n_ctx * vocab_size))
            else:
                self.ctx_tables.append(NgramHashTable(12, with_distinct=True))
                self.pair_tables.append(NgramHashTable(12))

    # ------------------------------------------------------------------ keys
    def _ngram_check(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise ValueError(f"BackoffNgram expects a 1-D token array, got shape {tokens.shape}")
        tokens = tokens.astype(np.int64, copy=False)
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.vocab_size})")
        return tokens

    def _ctx_step(self, g: np.ndarray, tokens: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
        """Hash of the length-k context from that of length k-1 by adding the token k back."""
        if k == 0:
            return np.full(len(pos), _NGRAM_SEED, dtype=np.uint64)
        return (g ^ (tokens[pos - k].astype(np.uint64) + np.uint64(1))) * _NGRAM_MULTS[k]

    def _ctx_key(self, g: np.ndarray, tokens: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
        if k == 0:
            return np.zeros(len(pos), dtype=np.uint64)
        if k == 1:
            return tokens[pos - 1].astype(np.uint64)
        low = np.uint64((1 << self.xbits) - 1)
        return (g & ~low) | _NGRAM_TOPBIT

    def _pair_key(self, ctx_key: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
        x = targets.astype(np.uint64)
        if k <= 1:
            return ctx_key * np.uint64(self.vocab_size) + x
        return ctx_key | x

    # ------------------------------------------------------------------ scoring
    def _interpolate(self, p, c_hx, c_h, u_h):
        d, beta = self.discount, self.beta
        return (np.maximum(c_hx - d, 0.0) + (d + beta) * u_h * p) / (c_h + beta * u_h)

    def logprob(self, tokens, start: int) -> np.ndarray:
        """log p(tokens[i] | tokens[:i]) for i in [start, len): float64 nats, counts left unchanged."""
        tokens = self._ngram_check(tokens)
        pos = np.arange(start, len(tokens))
        p = np.full(len(pos), 1.0 / self.vocab_size)
        idx = np.arange(len(pos))  # positions still active (their context of length k was seen)
        g = np.zeros(len(pos), dtype=np.uint64)
        for k in range(self.max_order):
            keep = pos[idx] - k >= 0  # the stream must hold k tokens before the target
            idx, g = idx[keep], g[keep]
            g = self._ctx_step(g, tokens, pos[idx], k)
            ckey = self._ctx_key(g, tokens, pos[idx], k)
            cslot = self.ctx_tables[k].find(ckey)
            seen = cslot >= 0
            seen[seen] = self.ctx_tables[k].count[cslot[seen]] > 0
            idx, g, ckey, cslot = idx[seen], g[seen], ckey[seen], cslot[seen]
            if idx.size == 0:
                break
            table = self.ctx_tables[k]
            c_h = table.count[cslot].astype(np.float64)
            u_h = table.distinct[cslot].astype(np.float64)
            pslot = self.pair_tables[k].find(self._pair_key(ckey, tokens[pos[idx]], k))
            c_hx = np.where(pslot >= 0, self.pair_tables[k].count[np.maximum(pslot, 0)], 0).astype(np.float64)
            p[idx] = self._interpolate(p[idx], c_hx, c_h, u_h)
        return np.log(p)

    def distributions(self, tokens, positions) -> np.ndarray:
        """Full next-token distributions (len(positions), V) float64 at tokens[i], from tokens[:i] only."""
        tokens = self._ngram_check(tokens)
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() > len(tokens)):
            raise ValueError(f"distribution positions outside [0, {len(tokens)}]")
        V = self.vocab_size
        p = np.full((len(pos), V), 1.0 / V)
        vocab = np.arange(V)
        idx = np.arange(len(pos))
        g = np.zeros(len(pos), dtype=np.uint64)
        for k in range(self.max_order):
            keep = pos[idx] - k >= 0
            idx, g = idx[keep], g[keep]
            g = self._ctx_step(g, tokens, pos[idx], k)
            ckey = self._ctx_key(g, tokens, pos[idx], k)
            cslot = self.ctx_tables[k].find(ckey)
            seen = cslot >= 0
            seen[seen] = self.ctx_tables[k].count[cslot[seen]] > 0
            idx, g, ckey, cslot = idx[seen], g[seen], ckey[seen], cslot[seen]
            if idx.size == 0:
                break
            c_h = self.ctx_tables[k].count[cslot].astype(np.float64)[:, None]
            u_h = self.ctx_tables[k].distinct[cslot].astype(np.float64)[:, None]
            pkeys = self._pair_key(np.repeat(ckey, V), np.tile(vocab, len(idx)), k)
            pslot = self.pair_tables[k].find(pkeys)
            c_hx = np.where(pslot >= 0, self.pair_tables[k].count[np.maximum(pslot, 0)], 0)
            p[idx] = self._interpolate(p[idx], c_hx.reshape(len(idx), V).astype(np.float64), c_h, u_h)
        return p

    # ------------------------------------------------------------------ counting
    def update(self, tokens, start: int) -> None:
        """Count every n-gram whose target is tokens[i], i >= start (contexts may reach before start)."""
        tokens = self._ngram_check(tokens)
        pos = np.arange(start, len(tokens))
        g = np.zeros(len(pos), dtype=np.uint64)
        for k in range(self.max_order):
            keep = pos - k >= 0
            pos, g = pos[keep], g[keep]
            if pos.size == 0:
                break
            g = self._ctx_step(g, tokens, pos, k)
            ckey = self._ctx_key(g, tokens, pos, k)
            self._ngram_count(k, ckey, self._pair_key(ckey, tokens[pos], k))

    def _ngram_count(self, k: int, ckey: np.ndarray, pkey: np.ndarray) -> None:
        ctx, pair = self.ctx_tables[k], self.pair_tables[k]
        cslot = ctx.find(ckey, insert=True)
        np.add.at(ctx.count, cslot, np.uint32(1))
        pslot = pair.find(pkey, insert=True)
        new = np.nonzero(pair.count[pslot] == 0)[0]
        # a pair new to the table counts once in u(h) however often it repeats in this chunk:
        # stamp each new slot with an occurrence id (one writer wins), keep that occurrence only
        stamp = (new + 1).astype(np.uint32)
        pair.count[pslot[new]] = stamp
        first = new[pair.count[pslot[new]] == stamp]
        pair.count[pslot[new]] = 0
        np.add.at(pair.count, pslot, np.uint32(1))
        np.add.at(ctx.distinct, cslot[first], np.uint32(1))

    def nbytes(self) -> int:
        """Bytes held by all count tables."""
        return sum(t.nbytes() for t in self.ctx_tables + self.pair_tables)
