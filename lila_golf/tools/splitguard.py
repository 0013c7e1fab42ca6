"""The leak guard: no validation document in training data or in a tokenizer's training text.

    python -m lila_golf data check-split data/datasets/fineweb10B_sp1024     # exit 1 on any overlap

A community data script once put 40k of the 50k val docs into training (parameter-golf #2127).
`data tokenize` writes the val docs first and refuses a train document whose text equals a val
document's (content hash of the stripped text); `data train-tokenizer --val FILES` refuses input that
holds a val document; `data check-split` checks existing shards by hashing each document's token ids
(every document is BOS + ids), val against train. Exact duplicates only: near-duplicates pass.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

from ..core.data import read_shard, shard_file, shard_paths


class SplitLeakError(ValueError):
    """Validation documents found where training data (or a tokenizer's training text) should be."""


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.strip().encode("utf-8"), digest_size=16).digest()


class ValGuard:
    """Hashes of the val documents seen so far; `check_train` refuses a train document among them."""

    def __init__(self):
        self.val: dict[bytes, int] = {}

    def add_val(self, text: str) -> None:
        self.val.setdefault(text_hash(text), len(self.val))

    def check_train(self, text: str, index: int) -> None:
        match = self.val.get(text_hash(text))
        if match is not None:
            raise SplitLeakError(f"document {index} of the input equals validation document {match}: "
                                 "a val document in training data (remove it from the train input)")


def documents_in_shards(paths: Iterable[str], bos_id: int) -> Iterator[np.ndarray]:
    """The documents (BOS + ids) of shards read in order; a document may span shard boundaries."""
    carry = np.zeros(0, dtype=np.uint16)
    for path in paths:
        tokens = np.concatenate((carry, read_shard(path)))
        starts = np.flatnonzero(tokens == bos_id)
        cuts = np.concatenate(([0], starts[starts > 0]))  # tokens before a first BOS are a document too
        for a, b in zip(cuts[:-1], cuts[1:]):
            yield tokens[a:b]
        carry = tokens[cuts[-1]:]
    if carry.size:
        yield carry


def token_hash(doc: np.ndarray) -> bytes:
    return hashlib.blake2b(doc.astype("<u2").tobytes(), digest_size=16).digest()


def check_split(data_dir, bos_id: int = 1, max_report: int = 5) -> dict:
    """Count val documents, train documents and train documents equal to a val document."""
    val = {token_hash(d): i for i, d in enumerate(documents_in_shards(shard_paths(shard_file(data_dir, "val")), bos_id))}
    train_docs, overlaps = 0, []
    for i, doc in enumerate(documents_in_shards(shard_paths(shard_file(data_dir, "train")), bos_id)):
        train_docs += 1
        if token_hash(doc) in val:
            overlaps.append((i, val[token_hash(doc)]))
    return {"val_docs": len(val), "train_docs": train_docs, "overlaps": len(overlaps), "examples": overlaps[:max_report]}
