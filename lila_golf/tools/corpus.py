"""The data a run uses when none is named: ./data in the challenge layout, else an embedded corpus
built offline from text every CPython install carries (scores on it are labelled "not FineWeb").

    data_dir, tokenizer, is_fineweb = resolve_data()        # as `python -m lila_golf demo` does
"""
import glob
import hashlib
import json
import os
import random
import sys
from pathlib import Path

import sentencepiece

from ..core.data import check_tokenizer_exact, shard_file, shard_paths
from .datacmd import atomic_write_bytes, tokenize_documents, train_tokenizer_proto, training_sentences

EMBEDDED_CORPUS_VERSION = 1
EMBEDDED_MARKER = "corpus.json"  # written into the embedded corpus' data dir; marks it "not FineWeb"


def _embedded_source_texts() -> dict:
    """CPython's pydoc topics (real English technical prose; present in every CPython install)."""
    from pydoc_data.topics import topics
    return topics


def _embedded_documents(topics: dict, max_chars: int = 2000) -> list[str]:
    """Topics cut into documents of whole paragraphs (~<= max_chars), in a fixed shuffled order."""
    docs = []
    for key in sorted(topics):
        current = ""
        for para in topics[key].split("\n\n"):
            if current and len(current) + len(para) + 2 > max_chars:
                docs.append(current)
                current = ""
            current = f"{current}\n\n{para}" if current else para
        if current.strip():
            docs.append(current)
    random.Random(1337).shuffle(docs)
    return docs


def _file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _embedded_paths(out_dir: Path) -> tuple[Path, Path]:
    return out_dir / "datasets" / "pydoc_sp1024", out_dir / "tokenizers" / "pydoc_1024_bpe.model"


def _embedded_valid(data_dir: Path, source_sha: str) -> bool:
    """True when the marker matches this source and builder and every listed file is intact."""
    try:
        marker = json.loads((data_dir / EMBEDDED_MARKER).read_text(encoding="utf-8"))
        return (marker["version"] == EMBEDDED_CORPUS_VERSION and marker["source_sha256"] == source_sha
                and all(_file_sha256(data_dir / rel) == sha for rel, sha in marker["files"].items()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_embedded_corpus(out_dir, val_fraction: float = 0.08, vocab_size: int = 1024) -> tuple[str, str]:
    """Build (or reuse when present and valid) the offline default corpus; return (data_dir, tokenizer).

    Real text every Python installation carries (pydoc_data topics), its own 1024-vocab BPE with the
    challenge's settings, shards in the challenge layout. Deterministic for a given Python version.
    Scores on it are NOT FineWeb scores: the data dir carries a corpus.json marker saying so.
    """
    out_dir = Path(out_dir)
    data_dir, model_path = _embedded_paths(out_dir)
    topics = _embedded_source_texts()
    source_sha = hashlib.sha256(json.dumps(topics, sort_keys=True).encode("utf-8")).hexdigest()
    if _embedded_valid(data_dir, source_sha):
        return str(data_dir), str(model_path)
    docs = _embedded_documents(topics)
    n_val = max(1, round(val_fraction * len(docs)))
    # Train the tokenizer on train documents only, one paragraph per sentence (the trainer skips
    # sentences over 4192 bytes by default).
    paragraphs = [p for d in docs[n_val:] for p in d.split("\n\n")]
    proto = train_tokenizer_proto(training_sentences(paragraphs, None), vocab_size)
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    check_tokenizer_exact(sp, name="embedded corpus tokenizer")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model_path, proto)
    data_dir.mkdir(parents=True, exist_ok=True)
    stats = tokenize_documents(docs, sp, data_dir, n_val, progress=False)
    tokenizer_rel = os.path.relpath(model_path, data_dir)  # relative, so the cache folder can move
    files = {rel: _file_sha256(data_dir / rel) for rel in [Path(p).name for p in stats["shards"]] + [tokenizer_rel]}
    marker = {"name": "embedded pydoc_data topics corpus", "fineweb": False, "version": EMBEDDED_CORPUS_VERSION,
              "python": sys.version.split()[0], "source_sha256": source_sha, "tokenizer": tokenizer_rel,
              "docs": stats["docs"], "val_docs": stats["val_docs"], "val_tokens": stats["val_tokens"],
              "train_tokens": stats["train_tokens"], "files": files}
    atomic_write_bytes(data_dir / EMBEDDED_MARKER, (json.dumps(marker, indent=2) + "\n").encode("utf-8"))
    return str(data_dir), str(model_path)


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "lila_golf")


def _challenge_tokenizer_for(data_dir: Path) -> Path | None:
    """data/datasets/fineweb10B_sp<N>/ -> data/tokenizers/fineweb_<N>_bpe.model, if it exists."""
    name = data_dir.name
    if name.startswith("fineweb10B_sp") and name[len("fineweb10B_sp"):].isdigit():
        model = data_dir.parent.parent / "tokenizers" / f"fineweb_{name[len('fineweb10B_sp'):]}_bpe.model"
        return model if model.is_file() else None
    return None


def _explicit_data(data_path, tokenizer_path) -> tuple[str, str, bool]:
    data_dir = Path(data_path)
    if not data_dir.is_dir():  # a glob such as .../fineweb_train_*.bin names its folder
        data_dir = data_dir.parent
    shard_paths(shard_file(data_dir, "val"))  # clear error when the folder holds no val shards
    marker = data_dir / EMBEDDED_MARKER
    if tokenizer_path is None:
        if marker.is_file():
            rel = json.loads(marker.read_text(encoding="utf-8"))["tokenizer"]
            tokenizer_path = os.path.normpath(data_dir / rel)
        else:
            tokenizer_path = _challenge_tokenizer_for(data_dir)
        if tokenizer_path is None:
            raise ValueError(f"{data_dir}: cannot tell which tokenizer made these shards; give its path "
                             "(TOKENIZER_PATH / --tokenizer-path)")
    return str(data_dir), str(tokenizer_path), not marker.is_file()


def resolve_data(data_path=None, tokenizer_path=None, cache_dir=None) -> tuple[str, str, bool]:
    """(data_dir, tokenizer_path, is_fineweb): explicit paths win, else the challenge layout ./data/
    in the working directory, else the embedded corpus (built on first use in `cache_dir`)."""
    if data_path is not None:
        return _explicit_data(data_path, tokenizer_path)
    if tokenizer_path is not None:
        raise ValueError("a tokenizer path was given without a data path; give both (DATA_PATH and TOKENIZER_PATH)")
    for data_dir in sorted(Path("data/datasets").glob("fineweb10B_sp*"), key=lambda p: p.name != "fineweb10B_sp1024"):
        model = _challenge_tokenizer_for(data_dir)
        if model is not None and glob.glob(shard_file(data_dir, "val")):
            return os.path.abspath(data_dir), os.path.abspath(model), True
    data_dir, model = build_embedded_corpus(Path(cache_dir or default_cache_dir()) / "embedded_corpus")
    return data_dir, model, False

