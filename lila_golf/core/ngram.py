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

Exact keys, no hashing of n-grams. Every stored m-gram has an integer id: a 1-gram is its token, a
2-gram (a, b) is a*V + b (dense arrays), and an m-gram with m >= 3 is stored under the exact key
(id of its first m-1 tokens + 1) << xbits | last token, which gets the next free id when first
counted. Keys are therefore distinct for distinct n-grams and c(h,x) is an exact count (the hash
function only picks the probe start in the open-addressing table). Per id the arrays hold
count (c of the m-gram as a target), ctx_count (c(h) with h = this m-gram as context) and distinct
(u(h)). An m-gram (h, x) is looked up once per position: its id gives c(h,x) at level m-1 and,
one position later, the context entry of level m; so scoring costs one table probe per position
and level, and counting only inserts the n-grams not seen before.

Memory cap. `max_entries` bounds the stored m-grams per order m >= 3. When an order is full,
occurrences of new m-grams are not counted at all: not in c(h,x), not in c(h), not in u(h); and
longer n-grams extending them cannot be stored either (their key needs the id). So for every h,
c(h) = sum_x c(h,x) and u(h) = #{x: c(h,x) >= 1} still hold: the counts are the exact counts of a
subset of the scored events, and each level still sums to exactly 1.
"""
import numpy as np

_NGRAM_FIB = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier for the probe start


class NgramHashTable:
    """Open-addressing map (linear probing, load <= 1/2) from nonzero uint64 keys to ids 0, 1, 2, ..."""

    def __init__(self, log2_capacity: int = 12):
        self._alloc(log2_capacity)
        self.entries = 0  # ids handed out so far; the next new key gets this id

    def _alloc(self, log2_capacity: int) -> None:
        self.log2_capacity = log2_capacity
        self.keys = np.zeros(1 << log2_capacity, dtype=np.uint64)  # 0 marks an empty slot
        self.slot_ids = np.full(1 << log2_capacity, -1, dtype=np.int32)

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _NGRAM_FIB) >> np.uint64(64 - self.log2_capacity)).astype(np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Id of each key (int64), -1 where the key is absent."""
        mask = (1 << self.log2_capacity) - 1
        out = np.full(len(keys), -1, dtype=np.int64)
        pending, pkeys, slot = np.arange(len(keys)), keys, self._home(keys)
        while pending.size:
            cur = self.keys[slot]
            hit = cur == pkeys
            out[pending[hit]] = self.slot_ids[slot[hit]]
            go_on = ~hit & (cur != 0)  # an empty slot ends the probe: the key is absent
            pending, pkeys, slot = pending[go_on], pkeys[go_on], (slot[go_on] + 1) & mask
        return out

    def _claim(self, keys: np.ndarray) -> np.ndarray:
        """Slots for keys absent from the table (repeats allowed: equal keys probe in lockstep, share one)."""
        mask = (1 << self.log2_capacity) - 1
        out = np.empty(len(keys), dtype=np.int64)
        pending, pkeys, slot = np.arange(len(keys)), keys, self._home(keys)
        while pending.size:
            empty = self.keys[slot] == 0
            self.keys[slot[empty]] = pkeys[empty]  # racing writers: one lands, the others read it back
            hit = self.keys[slot] == pkeys
            out[pending[hit]] = slot[hit]
            go_on = ~hit
            pending, pkeys, slot = pending[go_on], pkeys[go_on], (slot[go_on] + 1) & mask
        return out

    def add(self, keys: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids of keys, inserting absent ones while fewer than `limit` are stored (-1 for those left out).

        Also returns `created` (bool per key): the one occurrence of each new key that created it.
        When not all new keys fit, the smallest ones (in key order) are kept: deterministic.
        """
        ids = self.find(keys)
        miss = np.flatnonzero(ids < 0)
        created = np.zeros(len(keys), dtype=bool)
        room = limit - self.entries
        if miss.size == 0 or room <= 0:
            return ids, created
        if miss.size > room:  # keep the `room` smallest distinct new keys: all new keys <= the room-th
            new_keys = np.sort(keys[miss])
            distinct = new_keys[np.concatenate([[True], new_keys[1:] != new_keys[:-1]])]
            if len(distinct) > room:
                miss = miss[keys[miss] <= distinct[room - 1]]
        self._reserve(min(len(miss), room))  # at most `room` new keys, however often they repeat
        slots = self._claim(keys[miss])
        stamp = -2 - np.arange(len(miss), dtype=np.int32)  # one stamp lands per new slot: its creator
        self.slot_ids[slots] = stamp
        first = self.slot_ids[slots] == stamp
        self.slot_ids[slots[first]] = self.entries + np.arange(np.count_nonzero(first), dtype=np.int32)
        self.entries += int(np.count_nonzero(first))
        ids[miss] = self.slot_ids[slots]
        created[miss[first]] = True
        return ids, created

    def _reserve(self, n_new: int) -> None:
        need = self.entries + n_new
        if 2 * need <= (1 << self.log2_capacity):
            return
        bits = self.log2_capacity + 1
        while 2 * need > (1 << bits):
            bits += 1
        occupied = np.flatnonzero(self.keys)
        keys, ids = self.keys[occupied], self.slot_ids[occupied]
        self._alloc(bits)
        # Place all keys at once: sorted by home h_0 <= h_1 <= ..., linear probing puts key i at
        # s_i = max(h_i, s_{i-1} + 1) = i + max_{j <= i}(h_j - j). Slot order of the old table is
        # home order up to probe displacements, which a stable (run-merging) sort fixes in O(n).
        home = self._home(keys)
        order = np.argsort(home, kind="stable")
        keys, ids, home = keys[order], ids[order], home[order]
        rank = np.arange(len(keys))
        slot = np.maximum.accumulate(home - rank) + rank
        fits = slot < len(self.keys)
        self.keys[slot[fits]], self.slot_ids[slot[fits]] = keys[fits], ids[fits]
        if not fits.all():  # the run reached the end: the rest wraps round to the start
            self.slot_ids[self._claim(keys[~fits])] = ids[~fits]

    def nbytes(self) -> int:
        return self.keys.nbytes + self.slot_ids.nbytes


class BackoffNgram:
    """Interpolated backoff n-gram over token ids (see the module docstring for the formula)."""

    def __init__(self, vocab_size: int, max_order: int = 10, discount: float = 0.5, beta: float = 3.0,
                 max_entries: int | None = None):
        if vocab_size < 2 or max_order < 1:
            raise ValueError(f"BackoffNgram needs vocab_size >= 2 and max_order >= 1, got {vocab_size}, {max_order}")
        if not (0.0 <= discount <= 1.0) or beta < 0.0 or discount + beta <= 0.0:
            raise ValueError(f"BackoffNgram needs 0 <= discount <= 1, beta >= 0, discount + beta > 0; "
                             f"got discount={discount}, beta={beta}")
        if max_entries is not None and not (1 <= max_entries < 2 ** 31 - 1):
            raise ValueError(f"BackoffNgram needs 1 <= max_entries < 2**31 - 1 or None, got {max_entries}")
        self.vocab_size, self.max_order = vocab_size, max_order
        self.discount, self.beta = float(discount), float(beta)
        self.max_entries = 2 ** 31 - 2 if max_entries is None else int(max_entries)  # int32 ids
        self.xbits = int(vocab_size).bit_length()  # low key bits that hold the last token
        # per order m = 0..max_order: m-gram ids -> counts; order 0 is the empty context (one id, 0)
        # with a cap, tables start at their final size: no growth copies; the OS maps pages on first touch
        log2_slots = 12 if max_entries is None else max(12, (2 * self.max_entries - 1).bit_length())
        self.tables = [None] * 3 + [NgramHashTable(log2_slots) for _ in range(3, max_order + 1)]
        n_ids = 1 << 11 if max_entries is None else self.max_entries
        sizes = [1, vocab_size, vocab_size ** 2] + [n_ids] * (max_order - 2)
        self.count = [np.zeros(sizes[m], dtype=np.uint32) for m in range(max_order + 1)]
        self.ctx_count = [np.zeros(sizes[m], dtype=np.uint32) for m in range(max_order)]
        self.distinct = [np.zeros(sizes[m], dtype=np.uint32) for m in range(max_order)]

    def _ngram_check(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise ValueError(f"BackoffNgram expects a 1-D token array, got shape {tokens.shape}")
        tokens = tokens.astype(np.int64, copy=False)
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.vocab_size})")
        return tokens

    # ------------------------------------------------------------------ ids
    def _gram_key(self, prefix_ids: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Exact key of an m-gram (m >= 3) from the id of its first m-1 tokens and its last token."""
        return ((prefix_ids.astype(np.uint64) + np.uint64(1)) << np.uint64(self.xbits)) | last.astype(np.uint64)

    def _gram_ids(self, m: int, prefix_ids: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Ids of m-grams (-1 where not stored) from their prefix ids (>= 0) and last tokens."""
        if m == 1:
            return last.copy()
        if m == 2:
            return prefix_ids * self.vocab_size + last
        return self.tables[m].find(self._gram_key(prefix_ids, last))

    def _chain(self, seq: np.ndarray, m: int, prev: np.ndarray, first_target: int | None = None) -> np.ndarray:
        """Ids of the m-grams ending at each index of seq (-1: not stored, or crossing a -1 separator).

        prev: the same for (m-1)-grams; the m-gram ending at j is the (m-1)-gram ending at j-1 plus
        seq[j]. With first_target, m-grams ending at indices >= first_target are counted as well.
        """
        ids = np.full(len(seq), -1, dtype=np.int64)
        j = np.flatnonzero(prev[:-1] >= 0) + 1
        j = j[seq[j] >= 0]
        if j.size and first_target is None:
            ids[j] = self._gram_ids(m, prev[j - 1], seq[j])
        elif j.size:
            ids[j] = self._ngram_count(m, j >= first_target, prev[j - 1], seq[j])
        return ids

    # ------------------------------------------------------------------ scoring
    def _interpolate(self, p, c_hx, c_h, u_h):
        d, beta = self.discount, self.beta
        return (np.maximum(c_hx - d, 0.0) + (d + beta) * u_h * p) / (c_h + beta * u_h)

    def _ngram_level(self, k: int, h: np.ndarray):
        """(active mask, c(h), u(h)) for context ids h (-1 = not stored) at context length k."""
        active = h >= 0
        c_h = np.zeros(len(h), dtype=np.float64)
        c_h[active] = self.ctx_count[k][h[active]]
        active &= c_h > 0
        return active, c_h[active], self.distinct[k][h[active]].astype(np.float64)

    def _pair_count(self, m: int, ids: np.ndarray) -> np.ndarray:
        return np.where(ids >= 0, self.count[m][np.maximum(ids, 0)], 0).astype(np.float64)

    def logprob(self, tokens, start: int) -> np.ndarray:
        """log p(tokens[i] | tokens[:i]) for i in [start, len): float64 nats, counts left unchanged."""
        tokens = self._ngram_check(tokens)
        lo = max(0, start - self.max_order)
        seq = np.concatenate([[-1], tokens[lo:]])  # seq[j] = tokens[lo + j - 1]; the -1 stops every chain
        t = np.arange(start - lo + 1, len(seq))  # targets, as indices of seq
        p = np.full(len(t), 1.0 / self.vocab_size)
        ids = np.zeros(len(seq), dtype=np.int64)  # order 0: the empty context ends everywhere
        for k in range(self.max_order):
            nxt = self._chain(seq, k + 1, ids)  # (k+1)-grams: the pairs (h, x) of level k
            active, c_h, u_h = self._ngram_level(k, ids[t - 1])
            if not active.any():
                break
            p[active] = self._interpolate(p[active], self._pair_count(k + 1, nxt[t[active]]), c_h, u_h)
            ids = nxt
        return np.log(p)

    def distributions(self, tokens, positions) -> np.ndarray:
        """Full next-token distributions (len(positions), V) float64 at tokens[i], from tokens[:i] only."""
        tokens = self._ngram_check(tokens)
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() > len(tokens)):
            raise ValueError(f"distribution positions outside [0, {len(tokens)}]")
        V, N = self.vocab_size, self.max_order
        # each position's last N context tokens after a -1 that keeps chains inside their window
        back = pos[:, None] + np.arange(-N - 1, 0)  # (P, N + 1)
        seq = np.where(back >= 0, tokens[np.maximum(back, 0)], -1)
        seq[:, 0] = -1
        seq = seq.reshape(-1)
        last = np.arange(len(pos)) * (N + 1) + N  # index in seq of each window's last token
        p = np.full((len(pos), V), 1.0 / V)
        ids = np.zeros(len(seq), dtype=np.int64)
        for k in range(N):
            h = ids[last]  # id of the k tokens before each position (order 0: the empty context, 0)
            active, c_h, u_h = self._ngram_level(k, h)
            if not active.any():
                break
            pair = self._gram_ids(k + 1, np.repeat(h[active], V), np.tile(np.arange(V), int(active.sum())))
            c_hx = self._pair_count(k + 1, pair).reshape(-1, V)
            p[active] = self._interpolate(p[active], c_hx, c_h[:, None], u_h[:, None])
            ids = self._chain(seq, k + 1, ids)
        return p

    # ------------------------------------------------------------------ counting
    def update(self, tokens, start: int) -> None:
        """Count every n-gram whose target is tokens[i], i >= start (contexts may reach before start).

        Feed one stream in order, as NgramScorer does: an n-gram is stored through the id of its
        prefix, so n-grams that reach back into tokens no earlier update counted (beyond the first
        two) are left out of every count (consistently, as with a full table).
        """
        tokens = self._ngram_check(tokens)
        lo = max(0, start - self.max_order)
        seq = np.concatenate([[-1], tokens[lo:]])
        first_target = start - lo + 1
        ids = np.zeros(len(seq), dtype=np.int64)
        for m in range(1, self.max_order + 1):
            ids = self._chain(seq, m, ids, first_target)

    def _ngram_count(self, m: int, is_target: np.ndarray, prefix: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Ids of m-grams; those ending at a target are counted (new ones stored, room permitting)."""
        ids = np.empty(len(prefix), dtype=np.int64)
        hist = ~is_target
        ids[hist] = self._gram_ids(m, prefix[hist], last[hist])  # context only: counted in an earlier update
        prefix, last = prefix[is_target], last[is_target]
        if m <= 2:
            new_ids = self._gram_ids(m, prefix, last)
            fresh = np.flatnonzero(self.count[m][new_ids] == 0)
            created = np.zeros(len(new_ids), dtype=bool)
            created[fresh[np.unique(new_ids[fresh], return_index=True)[1]]] = True
        else:
            new_ids, created = self.tables[m].add(self._gram_key(prefix, last), self.max_entries)
            self._ngram_fit(m, self.tables[m].entries)
        ids[is_target] = new_ids
        kept = new_ids >= 0  # a full table leaves new m-grams out of every count (module docstring)
        np.add.at(self.count[m], new_ids[kept], np.uint32(1))
        np.add.at(self.ctx_count[m - 1], prefix[kept], np.uint32(1))
        np.add.at(self.distinct[m - 1], prefix[created], np.uint32(1))
        return ids

    def _ngram_fit(self, m: int, n_ids: int) -> None:
        """Grow the per-id arrays of order m to hold n_ids ids (by half again at least, amortised)."""
        size = len(self.count[m])
        if n_ids <= size:
            return
        new_size = max(n_ids, size + size // 2)
        arrays = [self.count] + ([self.ctx_count, self.distinct] if m < self.max_order else [])
        for arrs in arrays:
            grown = np.zeros(new_size, dtype=np.uint32)
            grown[:size] = arrs[m]
            arrs[m] = grown

    def nbytes(self) -> int:
        """Bytes held by all count tables."""
        arrays = self.count + self.ctx_count + self.distinct
        return sum(a.nbytes for a in arrays) + sum(t.nbytes() for t in self.tables if t is not None)
