"""Training checkpoints without pickle: a JSON index plus raw little-endian tensor bytes.

Layout: b"LGCKPT1\\n", uint64 header length, JSON header {"tensors": {name: [dtype, shape, offset,
nbytes]}, "meta": {...}}, then the tensor bytes. Optimiser states are flattened into named tensors and
JSON scalars, so resuming restores them exactly.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import torch

CKPT_MAGIC = b"LGCKPT1\n"


def save_checkpoint(path: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically (temp file + rename) so a run killed mid-write keeps its previous checkpoint."""
    index, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        index[name] = [str(t.dtype).removeprefix("torch."), list(t.shape), offset, len(raw)]
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps({"tensors": index, "meta": meta}).encode()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(CKPT_MAGIC + struct.pack("<Q", len(header)) + header)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    with open(path, "rb") as f:
        return parse_checkpoint(f.read(), path)


def parse_checkpoint(data: bytes, path: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint from its bytes (`path` only names it in errors)."""
    if not data.startswith(CKPT_MAGIC):
        raise ValueError(f"{path}: not a lila_golf checkpoint (bad magic)")
    (hlen,) = struct.unpack("<Q", data[8:16])
    try:
        header = json.loads(data[16:16 + hlen])
    except ValueError:
        raise ValueError(f"{path}: checkpoint header is corrupt") from None
    body, tensors = memoryview(data)[16 + hlen:], {}
    for name, (dtype, shape, offset, nbytes) in header["tensors"].items():
        if offset + nbytes > len(body):
            raise ValueError(f"{path}: checkpoint is truncated (tensor {name})")
        raw = bytes(body[offset:offset + nbytes])
        if dtype == "bfloat16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy())
        tensors[name] = t.reshape(shape)
    return tensors, header["meta"]


def flatten_optimizer_state(prefix: str, state: dict, tensors: dict) -> dict:
    """torch optimizer state_dict -> JSON-able dict; tensors go into `tensors` under prefixed names."""
    flat_state = {}
    for pid, pstate in state["state"].items():
        entry = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                name = f"{prefix}.{pid}.{key}"
                tensors[name] = value
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        flat_state[str(pid)] = entry
    return {"state": flat_state, "param_groups": state["param_groups"]}


def unflatten_optimizer_state(flat: dict, tensors: dict) -> dict:
    state = {}
    for pid, entry in flat["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in entry.items()}
    return {"state": state, "param_groups": flat["param_groups"]}
