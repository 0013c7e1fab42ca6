"""The model artifact: one file holding the quantised weights, read by every later command.

File layout (all integers little endian):

    offset 0        8 bytes   magic b"LILAGOLF"
    offset 8        u16       format version (1; 2 when a v2 feature below is used)
    offset 10       u32       header length H
    offset 14       H bytes   header, UTF-8 JSON (below)
    offset 14+H     P bytes   payload: the compressed groups, back to back
    end - 32        32 bytes  sha256 of every byte before it

Header JSON:
    format            "lila_golf.artifact"
    model_config      the model's config dict (whatever the trainer needs to rebuild the model)
    tokenizer_sha256  sha256 of the tokenizer file the model was trained with
    scheme, codec     the base quantisation scheme and the codec asked for
    payload_bytes     P
    groups            [{name, codec, offset, length, raw_bytes}]: offset/length of the coded group
                      within the payload, raw_bytes its decoded size. Groups: "sym<bits>"
                      (integer symbols q of the quantised tensors of that bit width, int8),
                      "scale" (fp16 per-row scales), "float" (tensors kept as floats or raw).
                      Codec per group: the artifact codec (zlib, lzma, zstd, brotli); with codec
                      "rans" the sym groups are coded by lila_golf.core.codec.rans_encode and the
                      other groups by lzma; with codec "best" each group by whichever of those
                      codes it smallest.
                      v2: streams "role" splits the sym groups by tensor role ("sym6.attn",
                      "sym6.mlp", "sym7.embed", "sym6.other"); the v2 schemes (SDClip, Fisher-
                      shaped, LQER, AWQ-lite: quant.py) add arrays: awq_q -> "sym8", lqer_a ->
                      "sym2", lqer_b -> "sym4", their scales -> "scale", awq_cols -> "float".
    tensors           [{name, shape, dtype, scheme, codec, arrays: [{key, dtype, shape, group,
                      offset, nbytes}]}]: dtype is the original torch dtype; each array lies at
                      [offset, offset+nbytes) of its decoded group, numpy dtype string (e.g. "|i1",
                      "<f2"), C order. Dequantisation is lila_golf.core.quant.dequantize_tensor.
    num_params, sym_h0_bits, sym_coded_bytes   size accounting: H0 (zero-order entropy, per
                      sym group, summed) of the integer symbols beside the bytes they were coded in.

Nothing is ever pickled; the loader checks magic, version, length, checksum and tokenizer hash
before it decodes anything, and every failure is an ArtifactError naming the file. What the header
declares is checked against caps first (header length, decoded bytes of all groups, elements per
tensor, numeric dtypes, nbytes = elements x itemsize, groups inside the payload), and no group is
ever decoded past the size it declares: a small file that would expand to gigabytes stops there.

Usage:
    n = save_artifact("final_model.lgz", model.state_dict(), model_config=cfg,
                      tokenizer_sha256=sha, scheme="int6_gptq", codec="lzma", hessians=H)
    state, header = load_artifact("final_model.lgz", tokenizer_sha256=sha)
"""
import hashlib
import json
import os
import re
import struct

import numpy as np
import torch

from .codec import CODEC_NAMES, CodecError, compress, decompress, rans_decode, rans_encode
from .quant import default_plan, dequantize_tensor, parse_scheme, parse_spec, quant_role, quantize_tensor, symbol_entropy_bits

ARTIFACT_MAGIC = b"LILAGOLF"
ARTIFACT_VERSION = 2  # what this code writes when it needs to (see _artifact_version); it reads 1 and 2
ARTIFACT_READ_VERSIONS = (1, 2)
ARTIFACT_CODECS = CODEC_NAMES + ("rans", "best")
ARTIFACT_STREAMS = ("bits", "role")
_ARTIFACT_V1_SCHEME = re.compile(r"^(fp32|fp16|bf16|raw|int8|int[2-8]_(lite|gptq))$")
_ARTIFACT_SYM_KEYS = {"awq_q": "sym8", "lqer_a": "sym2", "lqer_b": "sym4"}
_ARTIFACT_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_ARTIFACT_SHA_BYTES = 32
_ARTIFACT_RANS_SIDE_CODEC = "lzma"
# Caps on what a header may declare, checked before anything is decoded (an artifact that passes
# 16,000,000 bytes is invalid anyway; these leave room for float studies far past it).
ARTIFACT_MAX_HEADER_BYTES = 1 << 24        # JSON header length
ARTIFACT_MAX_RAW_BYTES = 1 << 30           # all groups decoded together
ARTIFACT_MAX_TENSOR_ELEMENTS = 1 << 28     # one tensor
_ARTIFACT_ARRAY_KINDS = "biuf"             # numpy dtype kinds an array may have (no objects)


class ArtifactError(ValueError):
    """A model artifact that is corrupt, truncated, foreign, or made for another tokenizer."""


def _artifact_scheme_for(name: str, tensor: torch.Tensor, scheme: str, hessians, plan, row_weights=None) -> str:
    """Scheme of one tensor: the plan's choice; without a Hessian (or a 2-D shape) a GPTQ method
    falls back to its round-to-nearest twin (gptq -> lite, sdgptq -> sd, fsgptq -> fs, hlqer ->
    lqer); without row weights a Fisher-shaped method falls back to SDClip."""
    if plan is None:
        chosen = default_plan(name, tensor, scheme)
    elif callable(plan):
        chosen = plan(name, tensor, scheme)
    else:
        chosen = plan.get(name) or default_plan(name, tensor, scheme)
    kind, bits = parse_scheme(chosen)
    if kind == "gptq" and (hessians is None or name not in hessians or tensor.ndim != 2):
        chosen = f"int{bits}_lite"
    if kind in ("sdgptq", "fsgptq") and (hessians is None or name not in hessians or tensor.ndim != 2):
        chosen = chosen.replace("gptq", "", 1)
    if "+hlqer" in chosen and (hessians is None or name not in hessians):
        chosen = chosen.replace("+hlqer", "+lqer")
    if parse_scheme(chosen)[0] == "fs" and (row_weights is None or name not in row_weights):
        chosen = chosen.replace("_fs_", "_sd_", 1)
    return chosen


def quantize_state(state_dict: dict, scheme: str = "int8", hessians: dict | None = None,
                   plan=None, device=None, row_weights: dict | None = None) -> dict[str, dict]:
    """Quantise every tensor of a state dict: name -> quantize_tensor entry (numpy arrays + meta).
    `plan`: None (default_plan), a callable (name, tensor, scheme) -> scheme, or a dict name ->
    scheme (missing names use default_plan). `device`: where GPTQ runs (default CPU).
    `row_weights`: name -> (rows,) output sensitivities for the Fisher-shaped methods."""
    if parse_scheme(scheme)[0] == "raw":
        raise ValueError("scheme 'raw' is for non-float tensors only; pick a float or int scheme")
    entries = {}
    for name, tensor in state_dict.items():
        chosen = _artifact_scheme_for(name, tensor, scheme, hessians, plan, row_weights)
        spec = parse_spec(chosen)
        needs_h = spec["kind"].endswith("gptq") or spec["lqer_h"] or spec["awq"]
        H = hessians.get(name) if hessians is not None and needs_h else None
        g = row_weights.get(name) if row_weights is not None and spec["kind"].startswith("fs") else None
        entries[name] = quantize_tensor(tensor.detach().cpu(), chosen, H=H, device=device, row_weight=g)
    return entries


def quantized_state(state_dict: dict, scheme: str = "int8", hessians: dict | None = None,
                    plan=None, device=None, row_weights: dict | None = None) -> dict[str, torch.Tensor]:
    """In-memory quantise + dequantise: exactly the tensors load_artifact returns for the same
    arguments to save_artifact (float32; "raw" tensors keep their dtype)."""
    entries = quantize_state(state_dict, scheme, hessians, plan, device, row_weights)
    return {k: dequantize_tensor(e) for k, e in entries.items()}


def _artifact_group_of(key: str, scheme: str, role: str | None = None) -> str:
    """Symbols of each bit width get their own group ("sym6", "sym8"): one set of statistics each;
    with role streams, one per bit width and tensor role ("sym6.attn")."""
    if key == "q" or key in _ARTIFACT_SYM_KEYS:
        group = f"sym{parse_scheme(scheme)[1]}" if key == "q" else _ARTIFACT_SYM_KEYS[key]
        return group if role is None else f"{group}.{role}"
    return "scale" if key.endswith(("scale", "_as", "_bs")) else "float"


def _artifact_layout(entries: dict, streams: str = "bits") -> tuple[list, dict]:
    """Tensor table (without codec) and, per group, the list of arrays in payload order."""
    table, group_arrays, group_pos = [], {}, {}
    for name, e in entries.items():
        arrays = []
        role = quant_role(name) if streams == "role" else None
        for key, arr in e["arrays"].items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            g = _artifact_group_of(key, e["scheme"], role)
            arrays.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "group": g,
                           "offset": group_pos.get(g, 0), "nbytes": int(arr.nbytes)})
            group_arrays.setdefault(g, []).append(arr)
            group_pos[g] = group_pos.get(g, 0) + int(arr.nbytes)
        table.append({"name": name, "shape": e["shape"], "dtype": e["dtype"], "scheme": e["scheme"],
                      "arrays": arrays})
    return table, group_arrays


def _artifact_encode_group(group: str, arrays: list, codec: str) -> tuple[bytes, str]:
    """Coded bytes of one group and the codec used for it ("best": the smallest of all)."""
    if codec == "best":
        options = [_artifact_encode_group(group, arrays, c) for c in ("rans",) + CODEC_NAMES]
        return min(options, key=lambda o: len(o[0]))
    if codec == "rans":
        if group.startswith("sym"):
            return rans_encode([a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)
                                for a in arrays]), "rans"
        codec = _ARTIFACT_RANS_SIDE_CODEC
    return compress(b"".join(a.tobytes() for a in arrays), codec), codec


def _artifact_version(table: list, streams: str, codec: str) -> int:
    """1 when the file uses only what version-1 readers know, else 2."""
    v1 = streams == "bits" and codec != "best" and all(_ARTIFACT_V1_SCHEME.match(t["scheme"]) for t in table)
    return 1 if v1 else ARTIFACT_VERSION


def save_artifact(path, state_dict: dict, *, model_config: dict, tokenizer_sha256: str,
                  scheme: str = "int8", codec: str = "zlib", hessians: dict | None = None,
                  plan=None, device=None, row_weights: dict | None = None, streams: str = "bits",
                  entries: dict | None = None, train_seq_len: int | None = None) -> int:
    """Quantise `state_dict` (see quantize_state), code it with `codec` (zlib, lzma, zstd, brotli,
    rans, best) and write the artifact to `path` atomically. streams "role": symbol groups per
    bit width and tensor role. `entries`: quantize_state's result when already computed (e.g.
    across ranks). train_seq_len, when given, goes into the header (the window length an
    evaluation must use). Returns the number of bytes written."""
    if codec not in ARTIFACT_CODECS:
        raise ValueError(f"unknown artifact codec {codec!r}: expected one of {ARTIFACT_CODECS}")
    if streams not in ARTIFACT_STREAMS:
        raise ValueError(f"unknown artifact streams {streams!r}: expected one of {ARTIFACT_STREAMS}")
    if not isinstance(tokenizer_sha256, str):
        raise ValueError("tokenizer_sha256 must be a hex string")
    if entries is None:
        entries = quantize_state(state_dict, scheme, hessians, plan, device, row_weights)
    table, group_arrays = _artifact_layout(entries, streams)
    version = _artifact_version(table, streams, codec)
    groups, blobs, offset = [], [], 0
    for g in sorted(group_arrays, key=lambda g: (not g.startswith("sym"), g)):
        blob, used = _artifact_encode_group(g, group_arrays[g], codec)
        groups.append({"name": g, "codec": used, "offset": offset, "length": len(blob),
                       "raw_bytes": sum(int(a.nbytes) for a in group_arrays[g])})
        blobs.append(blob)
        offset += len(blob)
    group_codec = {gr["name"]: gr["codec"] for gr in groups}
    for t in table:  # the codec of the tensor's main array (its symbols, or its float values)
        t["codec"] = group_codec[t["arrays"][0]["group"]] if t["arrays"] else codec
    header = {"format": "lila_golf.artifact", "version": version,
              "model_config": model_config, "tokenizer_sha256": tokenizer_sha256,
              "scheme": scheme, "codec": codec, "payload_bytes": offset, "groups": groups,
              "tensors": table, "num_params": int(sum(t.numel() for t in state_dict.values())),
              "sym_h0_bits": sum(symbol_entropy_bits(a) for g, a in group_arrays.items() if g.startswith("sym")),
              "sym_coded_bytes": sum(gr["length"] for gr in groups if gr["name"].startswith("sym"))}
    if train_seq_len is not None:
        header["train_seq_len"] = int(train_seq_len)
    try:
        header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    except TypeError as exc:
        raise ValueError(f"model_config is not JSON-serialisable: {exc}") from exc
    body = _ARTIFACT_PREFIX.pack(ARTIFACT_MAGIC, version, len(header_bytes)) + header_bytes \
        + b"".join(blobs)
    data = body + hashlib.sha256(body).digest()
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def _artifact_parse_prefix(path, head: bytes, file_bytes: int) -> tuple[int, dict]:
    """Check magic/version/header bounds and parse the JSON header -> (header_end, header)."""
    if len(head) < _ARTIFACT_PREFIX.size or head[:8] != ARTIFACT_MAGIC:
        raise ArtifactError(f"{path}: not a lila_golf artifact (bad magic bytes)")
    _, version, hlen = _ARTIFACT_PREFIX.unpack_from(head)
    if version not in ARTIFACT_READ_VERSIONS:
        raise ArtifactError(f"{path}: unsupported artifact format version {version} "
                            f"(this code reads {ARTIFACT_READ_VERSIONS})")
    end = _ARTIFACT_PREFIX.size + hlen
    if hlen > ARTIFACT_MAX_HEADER_BYTES:
        raise ArtifactError(f"{path}: header length {hlen} exceeds the cap of {ARTIFACT_MAX_HEADER_BYTES} bytes")
    if end + _ARTIFACT_SHA_BYTES > file_bytes or len(head) < end:
        raise ArtifactError(f"{path}: truncated artifact ({file_bytes} bytes, header alone needs {end})")
    try:
        header = json.loads(head[_ARTIFACT_PREFIX.size:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt artifact header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != "lila_golf.artifact":
        raise ArtifactError(f"{path}: corrupt artifact header (not a lila_golf.artifact header)")
    return end, header


def read_artifact_header(path) -> dict:
    """The JSON header of an artifact plus "file_bytes" and "header_bytes", reading only the
    header (no checksum check, no decoding): for size accounting and logs."""
    try:
        file_bytes = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(_ARTIFACT_PREFIX.size)
            hlen = _ARTIFACT_PREFIX.unpack_from(prefix)[2] if len(prefix) == _ARTIFACT_PREFIX.size else 0
            head = prefix + f.read(min(hlen, ARTIFACT_MAX_HEADER_BYTES + 1))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read artifact ({exc})") from exc
    end, header = _artifact_parse_prefix(path, head, file_bytes)
    return {**header, "file_bytes": file_bytes, "header_bytes": end}


def _artifact_int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _artifact_check_groups(path, header: dict) -> None:
    """Every group lies inside the payload and declares a decoded size; together within the cap."""
    groups, payload_bytes = header.get("groups"), header["payload_bytes"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ArtifactError(f"{path}: malformed artifact header (groups is not a list of objects)")
    total = 0
    for g in groups:
        off, length, raw = g.get("offset"), g.get("length"), g.get("raw_bytes")
        if not (_artifact_int(off, 0, payload_bytes) and _artifact_int(length, 0, payload_bytes - off)):
            raise ArtifactError(f"{path}: group {g.get('name')!r} lies outside the payload")
        if not _artifact_int(raw, 0, ARTIFACT_MAX_RAW_BYTES):
            raise ArtifactError(f"{path}: group {g.get('name')!r} declares {raw} decoded bytes "
                                f"(cap {ARTIFACT_MAX_RAW_BYTES})")
        total += raw
    if total > ARTIFACT_MAX_RAW_BYTES:
        raise ArtifactError(f"{path}: groups declare {total} decoded bytes in all, over the cap of {ARTIFACT_MAX_RAW_BYTES}")


def _artifact_check_array(path, name, a) -> None:
    """One array entry: a numeric dtype, a shape within the element cap, nbytes = elements * itemsize."""
    try:
        dtype = np.dtype(a["dtype"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: tensor {name!r} has a bad array dtype ({exc})") from None
    shape = a.get("shape")
    if dtype.kind not in _ARTIFACT_ARRAY_KINDS or not isinstance(shape, list) \
            or not all(_artifact_int(d, 0, ARTIFACT_MAX_TENSOR_ELEMENTS) for d in shape):
        raise ArtifactError(f"{path}: tensor {name!r} array {a.get('key')!r}: dtype {dtype} or shape {shape} not allowed")
    elements = int(np.prod(shape, dtype=object)) if shape else 1
    if elements > ARTIFACT_MAX_TENSOR_ELEMENTS or a.get("nbytes") != elements * dtype.itemsize \
            or not _artifact_int(a.get("offset"), 0, ARTIFACT_MAX_RAW_BYTES):
        raise ArtifactError(f"{path}: tensor {name!r} array {a.get('key')!r} declares {elements} elements "
                            f"(cap {ARTIFACT_MAX_TENSOR_ELEMENTS}) in {a.get('nbytes')} bytes at offset {a.get('offset')}")


def _artifact_check_tensors(path, header: dict) -> None:
    tensors = header.get("tensors")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) and isinstance(t.get("arrays"), list) for t in tensors):
        raise ArtifactError(f"{path}: malformed artifact header (tensors is not a list of objects with arrays)")
    for t in tensors:
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(_artifact_int(d, 0, ARTIFACT_MAX_TENSOR_ELEMENTS) for d in shape) \
                or int(np.prod(shape, dtype=object) if shape else 1) > ARTIFACT_MAX_TENSOR_ELEMENTS:
            raise ArtifactError(f"{path}: tensor {t.get('name')!r} shape {shape} exceeds the cap of "
                                f"{ARTIFACT_MAX_TENSOR_ELEMENTS} elements")
        for a in t["arrays"]:
            if not isinstance(a, dict):
                raise ArtifactError(f"{path}: tensor {t.get('name')!r} has a malformed array entry")
            _artifact_check_array(path, t.get("name"), a)


def _artifact_decode_groups(path, header: dict, payload: bytes) -> dict[str, bytes]:
    """Decode every group back to its raw bytes, never past the size its header declares."""
    raw = {}
    for g in header["groups"]:
        blob = payload[g["offset"]:g["offset"] + g["length"]]
        try:
            if g["codec"] == "rans":
                arrays = rans_decode(blob, max_symbols=g["raw_bytes"])
                raw[g["name"]] = b"".join(a.astype(np.int8).tobytes() for a in arrays)
            else:
                raw[g["name"]] = decompress(blob, g["codec"], max_bytes=g["raw_bytes"])
        except CodecError as exc:
            raise ArtifactError(f"{path}: group {g['name']!r} does not decode: {exc}") from exc
        if len(raw[g["name"]]) != g["raw_bytes"]:
            raise ArtifactError(f"{path}: group {g['name']!r} decodes to {len(raw[g['name']])} bytes, "
                                f"header says {g['raw_bytes']}")
    return raw


def _artifact_entry(path, t: dict, raw: dict) -> dict:
    """Rebuild one quantize_tensor entry from the decoded groups."""
    arrays = {}
    for a in t["arrays"]:
        buf = raw.get(a["group"], b"")
        if a["offset"] + a["nbytes"] > len(buf):
            raise ArtifactError(f"{path}: tensor {t['name']!r} array {a['key']!r} lies outside its group")
        arr = np.frombuffer(buf, dtype=np.dtype(a["dtype"]), count=a["nbytes"] // np.dtype(a["dtype"]).itemsize,
                            offset=a["offset"])
        arrays[a["key"]] = arr.reshape(a["shape"]).copy()
    return {"scheme": t["scheme"], "shape": t["shape"], "dtype": t["dtype"], "arrays": arrays}


def load_artifact(path, *, tokenizer_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read, verify and dequantise an artifact -> (state dict of float32 tensors ("raw" tensors keep
    their dtype), header). Raises ArtifactError for a foreign, truncated or corrupt file, or when
    `tokenizer_sha256` is given and differs from the one the artifact was made with."""
    try:
        if os.path.getsize(path) > ARTIFACT_MAX_RAW_BYTES:
            raise ArtifactError(f"{path}: {os.path.getsize(path)} bytes, over the cap of {ARTIFACT_MAX_RAW_BYTES}")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read artifact ({exc})") from exc
    end, header = _artifact_parse_prefix(path, data, len(data))
    payload_bytes = header.get("payload_bytes")
    if not isinstance(payload_bytes, int) or payload_bytes < 0:
        raise ArtifactError(f"{path}: malformed artifact header (payload_bytes missing)")
    expected = end + payload_bytes + _ARTIFACT_SHA_BYTES
    if len(data) != expected:
        raise ArtifactError(f"{path}: truncated or padded artifact ({len(data)} bytes, header says {expected})")
    if hashlib.sha256(data[:-_ARTIFACT_SHA_BYTES]).digest() != data[-_ARTIFACT_SHA_BYTES:]:
        raise ArtifactError(f"{path}: checksum mismatch, the artifact is corrupt")
    if tokenizer_sha256 is not None and header.get("tokenizer_sha256") != tokenizer_sha256:
        raise ArtifactError(f"{path}: tokenizer mismatch: artifact made with tokenizer sha256 "
                            f"{header.get('tokenizer_sha256')}, given {tokenizer_sha256}")
    _artifact_check_groups(path, header)
    _artifact_check_tensors(path, header)
    try:
        raw = _artifact_decode_groups(path, header, data[end:-_ARTIFACT_SHA_BYTES])
        state = {t["name"]: dequantize_tensor(_artifact_entry(path, t, raw)) for t in header["tensors"]}
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # a header this code did not write
        raise ArtifactError(f"{path}: malformed artifact header or payload ({type(exc).__name__}: {exc})") from exc
    return state, {**header, "file_bytes": len(data), "header_bytes": end}
