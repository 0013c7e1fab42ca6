"""CaseOps tokenization with the per-token byte sidecar (used by `data tokenize` for such a tokenizer).

    docs = encode_caseops_docs(sp, texts)     # [(BOS + ids as uint16, bytes per token as uint16)]

Each document is case-transformed (lila_golf.core.caseops), encoded with the tokenizer's character
offsets, and every token gets its share of the ORIGINAL text's UTF-8 bytes: the encoded characters
from where its piece begins up to where the next piece begins (the first token also takes what the
normaliser dropped before it, the last what it dropped after it). The shares of a document therefore
sum to its UTF-8 length exactly; its BOS stands for 0 bytes, except for a document that encodes to
no token at all (whitespace only), whose bytes its BOS carries so that the sum stays exact.
"""
from __future__ import annotations

import numpy as np

from ..core.caseops import caseops_byte_counts, caseops_encode


def token_byte_shares(encoded: str, offsets) -> tuple[np.ndarray, int]:
    """(bytes per token, bytes no token covers) for one encoded document; offsets: (begin, end)
    character spans of its pieces, in order."""
    prefix = np.concatenate(([0], np.cumsum(caseops_byte_counts(encoded), dtype=np.int64)))
    if not offsets:
        if prefix[-1] > np.iinfo(np.uint16).max:
            raise ValueError(f"a document of {prefix[-1]} bytes encodes to no token")
        return np.zeros(0, dtype=np.int64), int(prefix[-1])
    starts = [0] + [begin for begin, _ in offsets[1:]] + [len(encoded)]
    shares = prefix[starts[1:]] - prefix[starts[:-1]]
    if (shares < 0).any() or shares.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError("piece offsets are not in order, or a token stands for more than 65535 bytes")
    return shares, 0


def encode_caseops_docs(sp, texts, num_threads: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """BOS + ids and the byte sidecar (BOS first) of each text, both uint16."""
    encoded = [caseops_encode(t) for t in texts]
    out = []
    for enc, res in zip(encoded, sp.encode(encoded, return_type="offset_mapping", num_threads=num_threads)):
        shares, loose = token_byte_shares(enc, res["offsets"])
        ids = np.asarray([sp.bos_id()] + list(res["ids"]), dtype=np.uint16)
        out.append((ids, np.concatenate(([loose], shares)).astype(np.uint16)))
    return out
