"""The model artifact: one file holding the quantised weights, read by every later command.

File layout (all integers little endian):

    offset 0        8 bytes   magic b"LILAGOLF"
    offset 8        u16       format version (1)
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
                      other groups by lzma.
    tensors           [{name, shape, dtype, scheme, codec, arrays: [{key, dtype, shape, group,
                      offset, nbytes}]}]: dtype is the original torch dtype; each array lies at
                      [offset, offset+nbytes) of its decoded group, numpy dtype string (e.g. "|i1",
                      "<f2"), C order. Dequantisation is lila_golf.core.quant.dequantize_tensor.
    num_params, sym_h0_bits, sym_coded_bytes   size accounting: H0 (zero-order entropy, per
                      sym group, summed) of the integer symbols beside the bytes they were coded in.

Nothing is ever pickled; the loader checks magic, version, length, checksum and tokenizer hash
before it decodes anything, and every failure is an ArtifactError naming the file.

Usage:
    n = save_artifact("final_model.lgz", model.state_dict(), model_config=cfg,
                      tokenizer_sha256=sha, scheme="int6_gptq", codec="lzma", hessians=H)
    state, header = load_artifact("final_model.lgz", tokenizer_sha256=sha)
"""
import hashlib
import json
import os
import struct

import numpy as np
import torch

from .codec import CODEC_NAMES, CodecError, compress, decompress, rans_decode, rans_encode
from .quant import default_plan, dequantize_tensor, parse_scheme, quantize_tensor, symbol_entropy_bits

ARTIFACT_MAGIC = b"LILAGOLF"
ARTIFACT_VERSION = 1
ARTIFACT_CODECS = CODEC_NAMES + ("rans",)
_ARTIFACT_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_ARTIFACT_SHA_BYTES = 32
_ARTIFACT_RANS_SIDE_CODEC = "lzma"


class ArtifactError(ValueError):
    """A model artifact that is corrupt, truncated, foreign, or made for another tokenizer."""


def _artifact_scheme_for(name: str, tensor: torch.Tensor, scheme: str, hessians, plan) -> str:
    """Scheme of one tensor: the plan's choice; GPTQ without a Hessian falls back to lite."""
    if plan is None:
        chosen = default_plan(name, tensor, scheme)
    elif callable(plan):
        chosen = plan(name, tensor, scheme)
    else:
        chosen = plan.get(name) or default_plan(name, tensor, scheme)
    kind, bits = parse_scheme(chosen)
    if kind == "gptq" and (hessians is None or name not in hessians or tensor.ndim != 2):
        chosen = f"int{bits}_lite"
    return chosen


def quantize_state(state_dict: dict, scheme: str = "int8", hessians: dict | None = None,
                   plan=None, device=None) -> dict[str, dict]:
    """Quantise every tensor of a state dict: name -> quantize_tensor entry (numpy arrays + meta).
    `plan`: None (default_plan), a callable (name, tensor, scheme) -> scheme, or a dict name ->
    scheme (missing names use default_plan). `device`: where GPTQ runs (default CPU)."""
    if parse_scheme(scheme)[0] == "raw":
        raise ValueError("scheme 'raw' is for non-float tensors only; pick a float or int scheme")
    entries = {}
    for name, tensor in state_dict.items():
        chosen = _artifact_scheme_for(name, tensor, scheme, hessians, plan)
        H = hessians.get(name) if hessians is not None and chosen.endswith("_gptq") else None
        entries[name] = quantize_tensor(tensor.detach().cpu(), chosen, H=H, device=device)
    return entries


def quantized_state(state_dict: dict, scheme: str = "int8", hessians: dict | None = None,
                    plan=None, device=None) -> dict[str, torch.Tensor]:
    """In-memory quantise + dequantise: exactly the tensors load_artifact returns for the same
    arguments to save_artifact (float32; "raw" tensors keep their dtype)."""
    entries = quantize_state(state_dict, scheme, hessians, plan, device)
    return {k: dequantize_tensor(e) for k, e in entries.items()}


def _artifact_group_of(key: str, scheme: str) -> str:
    """Symbols of each bit width get their own group ("sym6", "sym8"): one set of statistics each."""
    if key == "q":
        return f"sym{parse_scheme(scheme)[1]}"
    return "scale" if key == "scale" else "float"


def _artifact_layout(entries: dict) -> tuple[list, dict]:
    """Tensor table (without codec) and, per group, the list of arrays in payload order."""
    table, group_arrays, group_pos = [], {}, {}
    for name, e in entries.items():
        arrays = []
        for key, arr in e["arrays"].items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            g = _artifact_group_of(key, e["scheme"])
            arrays.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "group": g,
                           "offset": group_pos.get(g, 0), "nbytes": int(arr.nbytes)})
            group_arrays.setdefault(g, []).append(arr)
            group_pos[g] = group_pos.get(g, 0) + int(arr.nbytes)
        table.append({"name": name, "shape": e["shape"], "dtype": e["dtype"], "scheme": e["scheme"],
                      "arrays": arrays})
    return table, group_arrays


def _artifact_encode_group(group: str, arrays: list, codec: str) -> tuple[bytes, str]:
    """Coded bytes of one group and the codec used for it."""
    if codec == "rans":
        if group.startswith("sym"):
            return rans_encode([a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)
                                for a in arrays]), "rans"
        codec = _ARTIFACT_RANS_SIDE_CODEC
    return compress(b"".join(a.tobytes() for a in arrays), codec), codec


def save_artifact(path, state_dict: dict, *, model_config: dict, tokenizer_sha256: str,
                  scheme: str = "int8", codec: str = "zlib", hessians: dict | None = None,
                  plan=None, device=None, train_seq_len: int | None = None) -> int:
    """Quantise `state_dict` (see quantize_state), code it with `codec` (zlib, lzma, zstd, brotli,
    rans) and write the artifact to `path` atomically. Returns the number of bytes written.
    train_seq_len, when given, goes into the header (the window length an evaluation must use)."""
    if codec not in ARTIFACT_CODECS:
        raise ValueError(f"unknown artifact codec {codec!r}: expected one of {ARTIFACT_CODECS}")
    if not isinstance(tokenizer_sha256, str):
        raise ValueError("tokenizer_sha256 must be a hex string")
    entries = quantize_state(state_dict, scheme, hessians, plan, device)
    table, group_arrays = _artifact_layout(entries)
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
    header = {"format": "lila_golf.artifact", "version": ARTIFACT_VERSION,
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
    body = _ARTIFACT_PREFIX.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header_bytes)) + header_bytes \
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
    if version != ARTIFACT_VERSION:
        raise ArtifactError(f"{path}: unsupported artifact format version {version} "
                            f"(this code reads {ARTIFACT_VERSION})")
    end = _ARTIFACT_PREFIX.size + hlen
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
            head = prefix + f.read(hlen)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read artifact ({exc})") from exc
    end, header = _artifact_parse_prefix(path, head, file_bytes)
    return {**header, "file_bytes": file_bytes, "header_bytes": end}


def _artifact_decode_groups(path, header: dict, payload: bytes) -> dict[str, bytes]:
    """Decode every group back to its raw bytes."""
    raw = {}
    for g in header["groups"]:
        blob = payload[g["offset"]:g["offset"] + g["length"]]
        try:
            if g["codec"] == "rans":
                raw[g["name"]] = b"".join(a.astype(np.int8).tobytes() for a in rans_decode(blob))
            else:
                raw[g["name"]] = decompress(blob, g["codec"])
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
    try:
        raw = _artifact_decode_groups(path, header, data[end:-_ARTIFACT_SHA_BYTES])
        state = {t["name"]: dequantize_tensor(_artifact_entry(path, t, raw)) for t in header["tensors"]}
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:  # a header this code did not write
        raise ArtifactError(f"{path}: malformed artifact header or payload ({type(exc).__name__}: {exc})") from exc
    return state, {**header, "file_bytes": len(data), "header_bytes": end}
