"""`lila-golf data ...`: fetch, tokenize, train tokenizers and shard stats (the command line).

    python -m lila_golf data fetch --variant sp1024 --train-shards 1          # challenge FineWeb -> ./data
    python -m lila_golf data tokenize --tokenizer T.model --out DIR --val-docs 100 docs.jsonl
    python -m lila_golf data train-tokenizer --input docs.jsonl --vocab-size 1024 --out tok/my_1024_bpe
    python -m lila_golf data stats --tokenizer T.model DIR/fineweb_val_000000.bin
    python -m lila_golf data check-bytes --tokenizer T.model DIR/fineweb_val_000000.bin docs.jsonl

Not part of the bundled train_gpt.py: these tools may use datasets, huggingface_hub and tqdm.
The hub download is in datafetch.py; the data a run uses when none is named (./data, else the
embedded corpus) in corpus.py.
"""
import argparse
import glob
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import sentencepiece

from ..core.data import (SPACE_PIECE, ShardError, TokenizerError, build_byte_tables, check_tokenizer_exact, is_caseops,
                         load_tokenizer, read_shard, shard_file, target_bytes, tokenizer_sha256, val_target_bytes,
                         write_shard)
from .caseopsdata import encode_caseops_docs
from .datafetch import HF_REMOTE_ROOT, HF_REPO_ID, FetchError, fetch_challenge_data
from .splitguard import SplitLeakError, ValGuard, check_split, text_hash

CHALLENGE_SHARD_TOKENS = 100_000_000
CHALLENGE_VAL_DOCS = 50_000
# SentencePiece trainer settings of the challenge's tokenizers (data/download_hf_docs_and_tokenize.py
# in openai/parameter-golf; the official fineweb_1024_bpe.model's trainer_spec agrees: bpe, coverage
# 0.999, byte_fallback, split_digits, hard_vocab_limit off, ids pad 0/bos 1/eos 2/unk 3; normalizer
# nmt_nfkc, no dummy prefix).
CHALLENGE_SP_SETTINGS = dict(
    model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
    normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
    pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False)


# ----------------------------------------------------------------------------- reading documents

def _doc_builder(path: str) -> str:
    """The `datasets` builder that reads this file, from its extension."""
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".txt"):
        return "text"
    raise ValueError(f"{path}: unknown document format (expected .jsonl[.gz], .json, .parquet or .txt)")


def iter_documents(paths, text_field: str = "text", txt_sample: str = "document"):
    """Yield document texts from files in argument order, read with `datasets` (streaming, offline).

    txt files: `txt_sample` is "document" (a file is one document), "paragraph" or "line".
    """
    # local files only: never wait on the network. The datasets library takes its offline switch
    # from this variable alone, read once when it is first imported, so it is set here (unless the
    # user set it): the package's one write to the environment, which only core.config reads.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: document file not found")
        builder = _doc_builder(path)
        kwargs = {"sample_by": txt_sample} if builder == "text" else {}
        field = "text" if builder == "text" else text_field
        for row in _read_rows(datasets, builder, path, kwargs):
            if field not in row:
                raise ValueError(f"{path}: no {field!r} field in a record (fields: {sorted(row)})")
            yield row[field]


def _read_rows(datasets, builder: str, path: str, kwargs: dict):
    """Rows of one file; a malformed file becomes a ValueError that names it."""
    try:
        ds = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
        yield from ds
    except Exception as exc:  # pyarrow / datasets raise many types for a malformed file
        raise ValueError(f"{path}: cannot read documents as {builder} ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------- writing shards

class ShardWriter:
    """Fills fixed-size shards like the challenge exporter: documents spill across shard boundaries,
    and the val/train switch starts a new shard. Files: fineweb_{split}_{index:06d}.bin, and for val
    documents given byte shares (CaseOps) the sidecar fineweb_val_bytes_{index:06d}.bin beside each."""

    def __init__(self, out_dir, shard_tokens: int):
        if shard_tokens <= 0:
            raise ValueError(f"shard size must be positive, got {shard_tokens}")
        self.out_dir = Path(out_dir)
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.side = np.empty(shard_tokens, dtype=np.uint16)  # byte shares aligned with buf
        self.fill, self.split, self.with_side = 0, "val", False
        self.index = {"val": 0, "train": 0}
        self.tokens = {"val": 0, "train": 0}
        self.paths: list[str] = []

    def add(self, split: str, tokens: np.ndarray, shares: np.ndarray | None = None) -> None:
        if split != self.split:
            self.flush()
            self.split = split
        self.with_side = shares is not None and split == "val"
        self.tokens[split] += tokens.size
        pos = 0
        while pos < tokens.size:
            take = min(self.buf.size - self.fill, tokens.size - pos)
            self.buf[self.fill:self.fill + take] = tokens[pos:pos + take]
            if self.with_side:
                self.side[self.fill:self.fill + take] = shares[pos:pos + take]
            self.fill, pos = self.fill + take, pos + take
            if self.fill == self.buf.size:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        path = shard_file(self.out_dir, self.split, self.index[self.split])
        write_shard(path, self.buf[:self.fill])
        self.paths.append(path)
        if self.with_side:
            write_shard(shard_file(self.out_dir, "val_bytes", self.index["val"]), self.side[:self.fill])
        self.index[self.split] += 1
        self.fill = 0


def _encode_batches(sp, texts, batch_size: int = 1024, num_threads: int | None = None):
    """Yield (text, BOS + ids as uint16, byte shares or None) per document, `batch_size` at a time;
    a CaseOps tokenizer gets the case transform and the byte shares of the original text."""
    threads = num_threads or os.cpu_count() or 1
    encode = encode_caseops_docs if is_caseops(sp) else _encode_docs
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield from zip(batch, *zip(*encode(sp, batch, threads)))
            batch = []
    if batch:
        yield from zip(batch, *zip(*encode(sp, batch, threads)))


def _encode_docs(sp, texts, threads):
    out = []
    for ids in sp.encode(texts, num_threads=threads):
        doc = np.empty(len(ids) + 1, dtype=np.uint16)  # every document is BOS + its ids, no EOS
        doc[0] = sp.bos_id()
        doc[1:] = ids
        out.append((doc, None))
    return out


def tokenize_documents(texts, sp, out_dir, val_docs: int, shard_tokens: int = CHALLENGE_SHARD_TOKENS,
                       progress: bool | None = None) -> dict:
    """Write documents as official shards: the first `val_docs` to val, the rest to train. A train
    document whose text equals a val document's raises SplitLeakError (the leak guard)."""
    from tqdm import tqdm
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer, guard = ShardWriter(out_dir, shard_tokens), ValGuard()
    n_docs = 0
    bar = tqdm(unit="doc", desc="tokenize", disable=None if progress is None else not progress)
    for text, doc, shares in _encode_batches(sp, texts):
        if n_docs < val_docs:
            guard.add_val(text)
        else:
            guard.check_train(text, n_docs)
        writer.add("val" if n_docs < val_docs else "train", doc, shares)
        n_docs += 1
        bar.update(1)
    bar.close()
    writer.flush()
    return {"docs": n_docs, "val_docs": min(n_docs, val_docs), "val_tokens": writer.tokens["val"],
            "train_tokens": writer.tokens["train"], "shards": writer.paths}


# ----------------------------------------------------------------------------- tokenizer training

def training_sentences(texts, max_docs: int | None):
    """Documents as the challenge feeds them to the trainer: NULs to spaces, stripped, non-empty."""
    for i, text in enumerate(texts):
        if max_docs is not None and i >= max_docs:
            break
        text = text.replace("\x00", " ").strip()
        if text:
            yield text


def train_tokenizer_proto(sentences, vocab_size: int, num_threads: int = 1) -> bytes:
    """Train a SentencePiece BPE with the challenge's settings; return the serialized model."""
    writer = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=writer, vocab_size=vocab_size,
            num_threads=num_threads, minloglevel=2, **CHALLENGE_SP_SETTINGS)
    except RuntimeError as exc:  # e.g. a vocab smaller than 260 byte/control pieces + required chars
        raise ValueError(f"SentencePiece training failed: {str(exc).split('] ')[-1]}") from None
    return writer.getvalue()


def _write_vocab_file(sp, path: Path) -> None:
    """The .vocab listing SentencePiece writes beside a model: piece<TAB>score per line."""
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size())]
    path.write_text("".join(lines), encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- stats

def shard_byte_stats(path, sp, tables=None) -> dict:
    """Targets (every token after the first), the bytes they stand for, and documents (BOS count)."""
    tables = tables or build_byte_tables(sp)
    tokens = read_shard(path, vocab_size=int(sp.vocab_size()))
    n_bytes = int(val_target_bytes(tokens, tables, str(path)).sum()) if tokens.size > 1 else 0  # CaseOps: the sidecar
    targets = max(0, tokens.size - 1)
    return {"tokens": targets, "bytes": n_bytes, "docs": int((tokens == sp.bos_id()).sum()),
            "bytes_per_token": n_bytes / targets if targets else 0.0}


# ----------------------------------------------------------------------------- byte audit

def sidecar_path(shard) -> Path:
    """The byte sidecar beside a shard: fineweb_val_000000.bin -> fineweb_val_bytes_000000.bin."""
    shard = Path(shard)
    split, _, index = shard.stem.rpartition("_")
    return shard.with_name(f"{split}_bytes_{index}{shard.suffix}")


def document_spans(tokens: np.ndarray, bos_id: int) -> list[tuple[int, int]]:
    """[start, end) of every document (BOS + its ids) of a shard, in order; ids before the first BOS
    (a shard that starts inside a document) are not a document."""
    starts = np.flatnonzero(tokens == bos_id)
    ends = np.append(starts[1:], tokens.size)
    return list(zip(starts.tolist(), ends.tolist()))


def _byte_cause(sp, ids: list[int], text: str, counted: int) -> str:
    """Why a document's counted bytes differ from its text's UTF-8 length, in words."""
    decoded = sp.decode(ids)
    causes = []
    if decoded != text:
        k = next((i for i, (a, b) in enumerate(zip(decoded, text)) if a != b), min(len(decoded), len(text)))
        causes.append(f"normalisation: the tokenizer's text differs from the source at char {k} "
                      f"({text[max(0, k - 10):k + 10]!r} -> {decoded[max(0, k - 10):k + 10]!r}), "
                      f"{len(decoded.encode('utf-8')) - len(text.encode('utf-8')):+d} bytes")
    if counted != len(decoded.encode("utf-8")):
        n_byte = sum(1 for i in ids if sp.is_byte(i))
        n_bare = sum(1 for i in ids if sp.id_to_piece(i) == SPACE_PIECE)
        causes.append(f"per-token count {counted - len(decoded.encode('utf-8')):+d} bytes off the decoded text "
                      f"({n_byte} byte-fallback pieces, {n_bare} bare '{SPACE_PIECE}')")
    return "; ".join(causes) or "unexplained"


def check_shard_bytes(shard, texts, sp, sidecar=None) -> tuple[list[dict], dict]:
    """Per document of `shard`: bytes counted (sidecar sums, else the challenge's per-token rule)
    against the UTF-8 length of the source text, documents and texts paired in order. Returns
    (rows for the documents that differ, summary)."""
    tokens = read_shard(shard, vocab_size=int(sp.vocab_size()))
    per_token = None
    if sidecar is not None:
        per_token = read_shard(sidecar).astype(np.int64)
        if per_token.size != tokens.size:
            raise ShardError(f"{sidecar}: {per_token.size} byte counts for the {tokens.size} tokens of {shard}")
    tables = build_byte_tables(sp, int(sp.vocab_size()))
    spans, rows, summary = document_spans(tokens, sp.bos_id()), [], {"compared": 0, "counted": 0, "utf8": 0}
    for i, ((a, b), text) in enumerate(zip(spans, texts)):
        doc = tokens[a:b].astype(np.int64)
        counted = int(per_token[a:b].sum()) if per_token is not None else int(target_bytes(doc[:-1], doc[1:], tables).sum())
        utf8 = len(text.encode("utf-8"))
        summary["compared"] += 1
        summary["counted"] += counted
        summary["utf8"] += utf8
        if counted != utf8:
            rows.append({"doc": i, "tokens": b - a, "counted": counted, "utf8": utf8,
                         "cause": _byte_cause(sp, doc[1:].tolist(), text, counted)})
    summary.update(shard_docs=len(spans), differ=len(rows))
    return rows, summary


# ----------------------------------------------------------------------------- command line

def _clean_errors(command):
    """Known failures (bad shard, inexact tokenizer, offline hub, bad input) end as one `error:` line."""
    def run(args) -> int:
        try:
            return command(args)
        except (ShardError, TokenizerError, FetchError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    run.__doc__ = command.__doc__
    return run


@_clean_errors
def _cmd_fetch(args) -> int:
    result = fetch_challenge_data(args.variant, args.train_shards, args.out, args.endpoint, args.repo_id)
    print(f"fetch_done data_dir:{result['data_dir']} files:{len(result['files'])}")
    return 0


@_clean_errors
def _cmd_tokenize(args) -> int:
    sp = load_tokenizer(args.tokenizer)
    out = Path(args.out)
    stale = sorted(map(Path, glob.glob(shard_file(out, "*")))) if out.is_dir() else []
    if stale and not args.overwrite:
        raise ValueError(f"{out} already holds shards ({stale[0].name}, ...); pass --overwrite to replace them")
    for path in stale:
        path.unlink()
    t0 = time.perf_counter()
    texts = iter_documents(args.inputs, args.text_field, args.txt_sample)
    try:
        stats = tokenize_documents(texts, sp, out, args.val_docs, args.shard_tokens)
    except SplitLeakError:
        for path in glob.glob(shard_file(out, "*")):  # no half-written, leaking split is left behind
            os.remove(path)
        raise
    seconds = time.perf_counter() - t0
    tokens = stats["val_tokens"] + stats["train_tokens"]
    if stats["docs"] <= args.val_docs:
        print(f"warning: all {stats['docs']} documents went to val (--val-docs {args.val_docs})", file=sys.stderr)
    print(f"tokenize_done docs:{stats['docs']} val_docs:{stats['val_docs']} val_tokens:{stats['val_tokens']} "
          f"train_tokens:{stats['train_tokens']} shards:{len(stats['shards'])} seconds:{seconds:.3f} "
          f"tokens_per_s:{tokens / max(seconds, 1e-9):.0f}")
    return 0


def refuse_val_documents(paths, val_paths, text_field: str, txt_sample: str) -> int:
    """Raise SplitLeakError when a document of `paths` equals one of `val_paths`; return the count checked."""
    guard = ValGuard()
    for text in iter_documents(val_paths, text_field, txt_sample):
        guard.add_val(text)
    n = 0
    for n, text in enumerate(iter_documents(paths, text_field, txt_sample), start=1):
        guard.check_train(text, n - 1)
    return n


@_clean_errors
def _cmd_train_tokenizer(args) -> int:
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if args.val:
        checked = refuse_val_documents(args.input, args.val, args.text_field, args.txt_sample)
        print(f"val_check documents:{checked} val_documents_in_input:0")
    else:
        print("warning: no --val given: the input is not checked for validation documents", file=sys.stderr)
    texts = iter_documents(args.input, args.text_field, args.txt_sample)
    proto = train_tokenizer_proto(training_sentences(texts, args.max_docs), args.vocab_size, args.num_threads)
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    model_path = prefix.with_name(prefix.name + ".model")
    atomic_write_bytes(model_path, proto)
    _write_vocab_file(sp, prefix.with_name(prefix.name + ".vocab"))
    check_tokenizer_exact(sp, name=str(model_path))
    print(f"tokenizer_done model:{model_path} vocab_size:{sp.vocab_size()} sha256:{tokenizer_sha256(model_path)}")
    return 0


@_clean_errors
def _cmd_check_split(args) -> int:
    res = check_split(args.data_dir, args.bos_id)
    print(f"check_split val_docs:{res['val_docs']} train_docs:{res['train_docs']} overlaps:{res['overlaps']}")
    for train_doc, val_doc in res["examples"]:
        print(f"overlap train_doc:{train_doc} val_doc:{val_doc}")
    return 1 if res["overlaps"] else 0


@_clean_errors
def _cmd_stats(args) -> int:
    sp = load_tokenizer(args.tokenizer)
    tables = build_byte_tables(sp)
    for path in args.shards:
        s = shard_byte_stats(path, sp, tables)
        print(f"shard:{path} docs:{s['docs']} tokens:{s['tokens']} bytes:{s['bytes']} "
              f"bytes_per_token:{s['bytes_per_token']:.6f}")
    return 0


@_clean_errors
def _cmd_check_bytes(args) -> int:
    sp = sentencepiece.SentencePieceProcessor()  # not load_tokenizer: an inexact tokenizer is what this finds
    if not os.path.isfile(args.tokenizer) or not sp.load(args.tokenizer):
        raise TokenizerError(f"{args.tokenizer}: not a SentencePiece model")
    sidecar = Path(args.sidecar) if args.sidecar else (sidecar_path(args.shard) if sidecar_path(args.shard).is_file() else None)
    texts = list(iter_documents(args.docs, args.text_field, args.txt_sample))
    rows, s = check_shard_bytes(args.shard, texts, sp, sidecar)
    for r in rows:
        print(f"doc:{r['doc']} tokens:{r['tokens']} counted:{r['counted']} utf8:{r['utf8']} "
              f"diff:{r['counted'] - r['utf8']:+d} cause:{r['cause']}")
    unpaired = f" ({s['shard_docs'] - s['compared']} shard docs beyond the file, not compared)" \
        if s["shard_docs"] > s["compared"] else ""
    if len(texts) > s["compared"]:
        unpaired = f" ({len(texts) - s['compared']} file docs beyond the shard, not compared)"
    print(f"check_bytes shard:{args.shard} counted_by:{'sidecar ' + str(sidecar) if sidecar else 'per-token rule'} "
          f"docs:{s['compared']}{unpaired} equal:{s['compared'] - s['differ']} differ:{s['differ']} "
          f"counted_bytes:{s['counted']} utf8_bytes:{s['utf8']}")
    return 1 if rows else 0


def _add_doc_reading_args(p) -> None:
    p.add_argument("--text-field", "--text_field", default="text", help="jsonl/parquet field holding the text")
    p.add_argument("--txt-sample", "--txt_sample", choices=("document", "paragraph", "line"), default="document",
                   help="how .txt files split into documents (default: one file = one document)")


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register `data` and its sub-commands on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="fetch, tokenize and inspect token shards",
                                 description="Data tools: challenge FineWeb download, tokenization, stats.")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])
    sub = data.add_subparsers(dest="data_command", metavar="{fetch,tokenize,train-tokenizer,check-split,stats,check-bytes}")

    p = sub.add_parser("fetch", help="download the challenge's shards and tokenizer from the HF hub",
                       description=f"Download {HF_REPO_ID} (folder {HF_REMOTE_ROOT}/) into the challenge layout.")
    p.add_argument("--variant", default="sp1024", help="tokenizer family: sp1024 (default), sp4096, sp8192, byte260, ...")
    p.add_argument("--train-shards", "--train_shards", type=int, default=1,
                   help="number of 100M-token train shards (default 1); val is always fetched whole")
    p.add_argument("--out", default="data", help="output root (default ./data)")
    p.add_argument("--endpoint", default=None, help="hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--repo-id", "--repo_id", default=HF_REPO_ID,
                   help=f"hub dataset in the challenge layout (default {HF_REPO_ID}, which holds sp1024; "
                        "community exports such as kevclark/parameter-golf hold sp4096 / sp8192)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("tokenize", help="documents (jsonl, jsonl.gz, parquet, txt) to official shards",
                       description="Each document becomes BOS + its ids (no EOS); the first --val-docs go to "
                                   "fineweb_val_*.bin, the rest to fineweb_train_*.bin.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="document files, read in this order")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--val-docs", "--val_docs", type=int, default=CHALLENGE_VAL_DOCS,
                   help=f"first N documents form the validation split (default {CHALLENGE_VAL_DOCS}, as the challenge)")
    p.add_argument("--shard-tokens", "--shard_tokens", type=int, default=CHALLENGE_SHARD_TOKENS,
                   help=f"tokens per shard (default {CHALLENGE_SHARD_TOKENS:,})")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    _add_doc_reading_args(p)
    p.set_defaults(func=_cmd_tokenize)

    p = sub.add_parser("train-tokenizer", help="train a SentencePiece BPE with the challenge's settings",
                       description="BPE, byte fallback, nmt_nfkc, no dummy prefix, split digits, "
                                   "pad 0/bos 1/eos 2/unk 3. Writes PREFIX.model and PREFIX.vocab.")
    p.add_argument("--input", nargs="+", required=True, help="document files (jsonl, jsonl.gz, parquet, txt)")
    p.add_argument("--vocab-size", "--vocab_size", type=int, required=True, help="vocabulary size")
    p.add_argument("--out", required=True, help="output prefix, e.g. data/tokenizers/my_1024_bpe")
    p.add_argument("--max-docs", "--max_docs", type=int, default=None, help="train on the first N documents only")
    p.add_argument("--num-threads", "--num_threads", type=int, default=os.cpu_count() or 1, help="trainer threads")
    p.add_argument("--val", nargs="+", default=None, metavar="VAL_DOCS",
                   help="validation documents: the input is refused when it holds any of them")
    _add_doc_reading_args(p)
    p.set_defaults(func=_cmd_train_tokenizer)

    p = sub.add_parser("check-split", help="check shards for val documents inside the train split",
                       description="Hashes every document (BOS + ids) of the val and train shards; exit 1 "
                                   "when a train document equals a val document.")
    p.add_argument("data_dir", help="folder of fineweb_{val,train}_*.bin")
    p.add_argument("--bos-id", "--bos_id", type=int, default=1, help="the BOS id that starts documents (default 1)")
    p.set_defaults(func=_cmd_check_split)

    p = sub.add_parser("stats", help="tokens, bytes and bytes/token per shard (challenge byte rules)",
                       description="Per shard: targets after the first token and the UTF-8 bytes they stand for.")
    p.add_argument("shards", nargs="+", metavar="SHARD", help="shard files")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model the shards were made with")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("check-bytes", help="per document: counted bytes against the UTF-8 length of the source text",
                       description="Pairs the shard's documents (split at BOS) with the source documents in "
                                   "order and reports every document whose counted bytes (the byte sidecar "
                                   "when there is one, else the challenge's per-token rule) differ from the "
                                   "UTF-8 length of its text, with the cause. Exit 1 when any differs.")
    p.add_argument("shard", metavar="SHARD", help="shard file")
    p.add_argument("docs", nargs="+", metavar="DOCS", help="the source documents (jsonl, parquet, txt), in shard order")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model the shard was made with")
    p.add_argument("--sidecar", default=None,
                   help="per-token byte counts (default: <split>_bytes_<index>.bin beside the shard, if present)")
    _add_doc_reading_args(p)
    p.set_defaults(func=_cmd_check_bytes)
    return data


def main(argv=None) -> int:
    """Entry point for `python -m lila_golf.tools.datacmd data ...` (the package CLI adds the same `data`)."""
    parser = argparse.ArgumentParser(prog="lila-golf")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
