"""Static checks of a submitted train_gpt.py: the patterns the challenge ruled on, with line numbers.

    python -m lila_golf audit --static records/track_10min_16mb/<record>/train_gpt.py

Reads the file's syntax tree (never runs it). A packed file (`exec(... lzma.decompress(base64.b85decode(
'...')))`, or zlib/gzip/bz2 and base64/b85/a85/b32/hex) is unpacked statically, its output bounded,
and the code inside is checked too; code executed from anything else is itself a finding. Rules:

- target-in-hash-key: the target token mixed into a hashed key (XOR, or mod/mask of a product with
  it), as in the disallowed hashed n-gram caches (PR #779 family): p(target) then comes from a
  bucket the target chose, not from one distribution over the vocabulary.
- score-after-update: in one function, a state update (update/observe/count/backward/step/adapt,
  `+=` into a table, np.add.at) followed by a scoring call (logprob, log_softmax, cross_entropy,
  score, eval/validation) on the same data variable: the score may have seen its own target.
- val-in-training: validation data (a "val" path or name) reaching training, calibration or a
  training loader, or a shard glob that matches the val shards too (`fineweb_*`).
- network: imports of network modules (socket, urllib, http, requests, huggingface_hub, ...),
  torch.hub downloads, curl/wget strings.
- opaque-code: exec/eval/compile of code that cannot be read statically.

These are heuristics over names and shapes of code: a finding is a place to read, and a file
written to evade them (renamed variables, indirection) can; the dynamic audit (`audit --scorer`) is
what checks behaviour. Exit 0 with no findings, 1 with findings, 2 when the file cannot be parsed.
"""
from __future__ import annotations

import ast
import base64
import bz2
import gzip
import io
import lzma
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.codec import CodecError, decompress

MAX_UNPACKED_BYTES = 16_000_000  # a code file counts toward the artifact limit: nothing larger is valid
NETWORK_MODULES = {"socket", "urllib", "urllib2", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib",
                   "smtplib", "telnetlib", "poplib", "imaplib", "xmlrpc", "websocket", "websockets", "paramiko",
                   "huggingface_hub", "pycurl", "grpc", "zmq", "ssl", "wget", "boto3", "botocore", "gcsfs", "s3fs"}
TARGET_NAME = re.compile(r"^(y|ys|tgt|tgts|tgt_\w+|targets?|target_\w+|labels?|next_tok\w*|nxt|x_t)$", re.I)
HASH_NAME = re.compile(r"hash|prime|bucket|mask|ctx|key", re.I)
UPDATE_CALL = re.compile(r"^(update|update_\w+|observe|absorb|count|add_counts?|backward|step|adapt|adapt_\w+|"
                         r"_ttt_adapt|fit|partial_fit|train_step|learn)$")
SCORE_CALL = re.compile(r"^(log_?prob\w*|log_softmax|cross_entropy|nll\w*|score\w*|eval\w*|\w*validation\w*|"
                        r"distributions?)$")
TRAIN_CALL = re.compile(r"train|loader|Loader|calib|hessian|bigram|fit|adapt|complement", re.I)
VAL_WORD = re.compile(r"(^|[^a-z])val([^a-z]|idation|$)", re.I)
GENERIC_NAMES = {"self", "np", "torch", "F", "nn", "math", "dist", "model", "len", "range", "int", "float", "sum",
                 "min", "max", "list", "tuple", "dict", "print", "device", "hp", "args", "cfg", "log", "i", "j", "k"}
_DECOMPRESS = {("lzma", "decompress"): "lzma", ("zlib", "decompress"): "zlib", ("gzip", "decompress"): "gzip",
               ("bz2", "decompress"): "bz2"}
_DECODE = {"b85decode": base64.b85decode, "b64decode": base64.b64decode, "a85decode": base64.a85decode,
           "b32decode": base64.b32decode, "urlsafe_b64decode": base64.urlsafe_b64decode, "fromhex": bytes.fromhex,
           "unhexlify": bytes.fromhex}


@dataclass
class Finding:
    rule: str
    line: int
    message: str
    where: str = ""  # "" for the file itself, else "packed code from line N"

    def text(self) -> str:
        at = f"line:{self.line}" + (f" ({self.where})" if self.where else "")
        return f"finding rule:{self.rule} {at} {self.message}"


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _strings(node) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _code_strings(tree) -> list[ast.Constant]:
    """String constants that are not docstrings or other bare-expression text."""
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in prose]


# ----------------------------------------------------------------------------- packed code

def _literal_bytes(node):
    """The bytes a literal-only decode/decompress chain evaluates to, or None if it is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return node.value.encode() if isinstance(node.value, str) else node.value
    if isinstance(node, ast.Call) and len(node.args) >= 1:
        inner = _literal_bytes(node.args[0])
        f = node.func
        if inner is None or not isinstance(f, ast.Attribute):
            return None
        if f.attr == "decode" and not node.args[1:]:
            return inner
        module = f.value.id if isinstance(f.value, ast.Name) else ""
        if (module, f.attr) in _DECOMPRESS:
            return _bounded_decompress(_DECOMPRESS[(module, f.attr)], inner)
        if f.attr in _DECODE:
            return _DECODE[f.attr](inner.decode() if f.attr in ("fromhex", "unhexlify") else inner)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "decode":
        return _literal_bytes(node.func.value)
    return None


def _bounded_decompress(kind: str, data: bytes) -> bytes:
    """What the packed file's decompress call returns, reading at most MAX_UNPACKED_BYTES + 1 bytes."""
    if kind == "zlib":
        return decompress(data, "zlib", max_bytes=MAX_UNPACKED_BYTES)
    opener = {"lzma": lzma.LZMAFile, "gzip": lambda f: gzip.GzipFile(fileobj=f), "bz2": bz2.BZ2File}[kind]
    with opener(io.BytesIO(data)) as reader:  # lzma: FORMAT_AUTO, as lzma.decompress reads
        out = reader.read(MAX_UNPACKED_BYTES + 1)
    if len(out) > MAX_UNPACKED_BYTES:
        raise CodecError(f"packed code expands past {MAX_UNPACKED_BYTES} bytes")
    return out


def _exec_payloads(tree) -> tuple[list[tuple[int, str]], list[Finding]]:
    """(line, source) of code the file executes from literals, and opaque-code findings."""
    found, findings = [], []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node) in ("exec", "eval") and isinstance(node.func, ast.Name)):
            continue
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Call) and _call_name(arg) == "compile" and arg.args:
            arg = arg.args[0]
        try:
            code = _literal_bytes(arg) if arg is not None else None
        except (ValueError, CodecError, EOFError, OSError, lzma.LZMAError) as exc:
            findings.append(Finding("opaque-code", node.lineno, f"{_call_name(node)} of packed code that does not unpack ({exc})"))
            continue
        if code is None:
            findings.append(Finding("opaque-code", node.lineno, f"{_call_name(node)} of code that cannot be read statically"))
        else:
            found.append((node.lineno, code.decode("utf-8", errors="replace")))
    return found, findings


# ----------------------------------------------------------------------------- rules

def _rule_network(tree) -> list[Finding]:
    out = []
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods = [node.module]
        elif isinstance(node, ast.Call) and _call_name(node) in ("__import__", "import_module") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            mods = [node.args[0].value]
        for m in mods:
            if m.split(".")[0] in NETWORK_MODULES or m.startswith("torch.hub"):
                out.append(Finding("network", node.lineno, f"imports {m}: no network access at train or eval time"))
        if isinstance(node, ast.Attribute) and node.attr in ("hub", "download_url_to_file", "load_state_dict_from_url") \
                and "torch" in _names(node.value):
            out.append(Finding("network", node.lineno, f"uses torch.{node.attr} (downloads)"))
    for node in _code_strings(tree):
        if re.search(r"\b(curl|wget)\s", node.value):
            out.append(Finding("network", node.lineno, f"runs a download command ({node.value[:40]!r})"))
    return out


def _hash_like(node: ast.BinOp) -> bool:
    """XOR, or a mod / mask of an expression that multiplies: the shapes of a hashed key."""
    if isinstance(node.op, ast.BitXor):
        return True
    if isinstance(node.op, (ast.Mod, ast.BitAnd)):
        return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) for n in ast.walk(node.left))
    return False


def _rule_target_in_key(tree) -> list[Finding]:
    out, seen = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and _hash_like(node) and node.lineno not in seen:
            names = _names(node)
            targets = sorted(n for n in names if TARGET_NAME.match(n))
            if targets and (any(HASH_NAME.search(n) for n in names) or isinstance(node.op, ast.BitXor)):
                seen.add(node.lineno)
                out.append(Finding("target-in-hash-key", node.lineno,
                                   f"target {targets[0]!r} mixed into a hashed key: p(target) from a bucket the "
                                   f"target picks is not one distribution over the vocabulary"))
    return out


def _actions(stmt) -> tuple[set[str], set[str]]:
    """(data names a statement updates state with, data names it scores) within the statement."""
    upd, score = set(), set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call):
            name, args = _call_name(node), [*node.args, *(k.value for k in node.keywords)]
            data = set().union(*(_names(a) for a in args)) - GENERIC_NAMES if args else set()
            if isinstance(node.func, ast.Attribute) and name == "at" and "add" in _names(node.func):
                upd |= data
            elif UPDATE_CALL.match(name):
                upd |= data | ((_names(node.func.value) - GENERIC_NAMES) if isinstance(node.func, ast.Attribute) else set())
            elif SCORE_CALL.match(name):
                score |= data
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
            upd |= _names(node.target.slice) - GENERIC_NAMES
    return upd, score


def _rule_score_after_update(tree) -> list[Finding]:
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.For, ast.While)):
            continue
        updated: dict[str, int] = {}
        for stmt in fn.body:
            upd, score = _actions(stmt)
            shared = sorted(score & set(updated))
            if shared:
                out.append(Finding("score-after-update", stmt.lineno,
                                   f"scores {shared[0]!r} after the state was updated with it at line {updated[shared[0]]}"))
            for name in upd:
                updated.setdefault(name, stmt.lineno)
    return out


def _rule_val_in_training(tree) -> list[Finding]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and TRAIN_CALL.search(_call_name(node)) and not VAL_WORD.search(_call_name(node)):
            args = [*node.args, *(k.value for k in node.keywords)]
            vals = [s for a in args for s in _strings(a) if VAL_WORD.search(s)] + \
                   [n for a in args for n in _names(a) if VAL_WORD.search(n)]
            if vals:
                out.append(Finding("val-in-training", node.lineno,
                                   f"validation data ({vals[0]!r}) passed to {_call_name(node)}()"))
        elif isinstance(node, ast.Assign):
            targets = [n for t in node.targets for n in _names(t)]
            vals = [s for s in _strings(node.value) if VAL_WORD.search(s)]
            if any("train" in t.lower() or "calib" in t.lower() for t in targets) and vals:
                out.append(Finding("val-in-training", node.lineno, f"training data set from {vals[0]!r}"))
    for node in _code_strings(tree):
        if re.search(r"fineweb_\*", node.value):
            out.append(Finding("val-in-training", node.lineno, f"shard glob {node.value!r} matches the val shards too"))
    return out


RULES = (_rule_target_in_key, _rule_score_after_update, _rule_val_in_training, _rule_network)


def scan_source(source: str, where: str = "") -> list[Finding]:
    """Every finding in one source text, packed code inside it included (recursively)."""
    tree = ast.parse(source)
    findings = [f for rule in RULES for f in rule(tree)]
    payloads, opaque = _exec_payloads(tree)
    findings += opaque
    for line, code in payloads:
        inner = scan_source(code, f"packed code from line {line}")
        findings += inner
    for f in findings:
        f.where = f.where or where
    return sorted(findings, key=lambda f: (f.where, f.line, f.rule))


def run_static_audit(path) -> int:
    """`audit --static FILE`: one line per finding, then a summary; exit 0 clean, 1 findings, 2 unreadable."""
    path = Path(path)
    try:
        source = path.read_bytes().decode("utf-8")
        findings = scan_source(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError) as exc:
        print(f"audit error: {path}: cannot read as Python source ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    for f in findings:
        print(f.text())
    rules = sorted({f.rule for f in findings})
    print(f"audit_static file:{path} findings:{len(findings)}" + (f" rules:{','.join(rules)}" if rules else ""))
    return 1 if findings else 0
