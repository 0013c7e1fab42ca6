"""Export inside the clock: GPTQ calibration on training batches, the GPTQ solve split across ranks,
and the artifact shared between ranks as bytes.

Calibration (Hessians from GPTQ_CALIB_BATCHES training batches) and the GPTQ solve count toward
MAX_WALLCLOCK_SECONDS, so training stops GPTQ_RESERVE_SECONDS early; by default the reserve is an
estimate timed on this run's first calibration batch and on the solve of its largest matrix.
Every rank computes the same Hessians from the same batches (the start of the training stream,
whatever the world size), then solves its share of the tensors (greedy by cost, largest first) on
its device and broadcasts them: 8 GPUs solve in about 1/8 of the time, and the artifact's bytes do
not depend on the world size.

    hessians = collect_hessians(model, calibration_batches(hp, device))
    entries = quantize_state_across_ranks(state, hp.quant_scheme, hessians, device)
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import torch

from .artifact import quantize_state, save_artifact
from .bitalloc import BITALLOC_ROUNDS
from .collectives import all_reduce_, broadcast_bytes, rank_and_world
from .data import DistributedTokenLoader, shard_file
from .quant import collect_hessians, default_plan, quantize_tensor

GPTQ_RESERVE_MARGIN = 1.25  # the estimate's safety factor: solve times vary with the weights


def uses_gptq(hp) -> bool:
    return hp.quant_scheme.endswith("_gptq")


def calibration_pairs(hp, device, count: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` (GPTQ_CALIB_BATCHES) micro-batches (inputs, targets) of the training stream,
    identical on every rank and at every world size: training data only, never validation."""
    loader = DistributedTokenLoader(shard_file(hp.data_path, "train"), 0, 1, hp.vocab_size)
    count = hp.gptq_calib_batches if count is None else count
    pairs = [loader.next_batch(hp.train_batch_tokens, hp.train_seq_len, hp.grad_accum_total) for _ in range(count)]
    return [(x.to(device), y.to(device)) for x, y in pairs]


def calibration_batches(hp, device, count: int | None = None) -> list[torch.Tensor]:
    """The inputs of calibration_pairs (what GPTQ's Hessians need)."""
    return [x for x, _ in calibration_pairs(hp, device, count)]


def uses_budget(hp) -> bool:
    """QUANT_BUDGET_BYTES set: the export allocates bits per tensor under a byte budget (bitalloc)."""
    return hp.quant_budget_bytes != 0


def gptq_cost(tensor: torch.Tensor) -> int:
    """Work of quantising one tensor: rows * cols^2 for a GPTQ matrix (the solve), else its size."""
    return tensor.shape[0] * tensor.shape[1] ** 2 if tensor.ndim == 2 else tensor.numel()


def assign_owners(state: dict, world: int) -> dict[str, int]:
    """Tensor name -> the rank that quantises it: largest cost first, each to the least-loaded rank."""
    load, owners = [0] * world, {}
    for name in sorted(state, key=lambda n: (-gptq_cost(state[n]), n)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owners[name] = rank
        load[rank] += gptq_cost(state[name])
    return owners


def entry_to_bytes(entry: dict) -> bytes:
    """A quantize_tensor entry as bytes: a JSON header line, then each array's raw bytes."""
    arrays = [(k, np.ascontiguousarray(a)) for k, a in entry["arrays"].items()]
    meta = {k: entry[k] for k in ("scheme", "shape", "dtype")}
    meta["arrays"] = [[k, a.dtype.str, list(a.shape)] for k, a in arrays]
    return json.dumps(meta).encode() + b"\n" + b"".join(a.tobytes() for _, a in arrays)


def entry_from_bytes(data: bytes) -> dict:
    head, _, body = data.partition(b"\n")
    meta = json.loads(head)
    arrays, offset = {}, 0
    for key, dtype, shape in meta.pop("arrays"):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        arrays[key] = np.frombuffer(body[offset:offset + n], dtype=dtype).reshape(shape).copy()
        offset += n
    return {**meta, "arrays": arrays}


def quantize_state_across_ranks(state: dict, scheme: str, hessians: dict | None, device, plan=None,
                                row_weights: dict | None = None) -> dict[str, dict]:
    """quantize_state (with its plan and row weights), each rank solving its share; every rank
    returns all entries, in state order."""
    rank, world = rank_and_world()
    owners = assign_owners(state, world)
    local = quantize_state({n: t for n, t in state.items() if owners[n] == rank}, scheme, hessians, plan=plan,
                           device=device, row_weights=row_weights)
    if world == 1:
        return local
    return {n: entry_from_bytes(broadcast_bytes(entry_to_bytes(local[n]) if owners[n] == rank else None, owners[n]))
            for n in state}


def _sync(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def estimate_gptq_ms(model, hp, device) -> dict:
    """Time one calibration batch's Hessians and the solve of the largest GPTQ matrix on this
    device; project calibration + this rank's share of the solves; the max over ranks, times
    GPTQ_RESERVE_MARGIN. Uses the initial weights (the cost does not depend on their values).
    Under a byte budget (QUANT_BUDGET_BYTES) the calibration adds a backward pass (3x a forward)
    and up to BITALLOC_ROUNDS + 1 exports each solve and code the model (the coding time scaled
    from the largest matrix's by parameter count)."""
    state, budget = {k: v.detach() for k, v in model.state_dict().items()}, uses_budget(hp)
    scheme = hp.quant_scheme if uses_gptq(hp) else "int6_gptq"  # the budget's plans solve with GPTQ too
    gptq = {n: t for n, t in state.items() if t.ndim == 2 and default_plan(n, t, scheme).endswith("_gptq")}
    t0 = _sync(device)
    hessians = collect_hessians(model, calibration_batches(hp, device, count=1))
    t1 = _sync(device)
    largest = max(gptq, key=lambda n: (gptq_cost(gptq[n]), n)) if gptq else None
    entry = None
    if largest is not None and largest in hessians:
        entry = quantize_tensor(gptq[largest].float().cpu(), default_plan(largest, gptq[largest], scheme),
                                H=hessians[largest], device=device)
    t2 = _sync(device)
    rank, world = rank_and_world()
    owners = assign_owners(state, world)
    share = sum(gptq_cost(t) for n, t in gptq.items() if owners[n] == rank) / max(gptq_cost(gptq[largest]), 1) if gptq else 0
    code_ms = _coding_ms(largest, entry, hp) * sum(t.numel() for t in state.values()) / gptq[largest].numel() \
        if budget and entry is not None else 0.0
    rounds, calib = (BITALLOC_ROUNDS + 1, 3) if budget else (1, 1)
    ms = torch.tensor([GPTQ_RESERVE_MARGIN * (1000 * (hp.gptq_calib_batches * calib * (t1 - t0) + rounds * share * (t2 - t1))
                                              + rounds * code_ms)], dtype=torch.float64)
    all_reduce_(ms, op="max")
    return {"reserve_ms": float(ms.item()), "hessian_batch_ms": 1000 * (t1 - t0), "solve_largest_ms": 1000 * (t2 - t1),
            "solve_share": share, "gptq_tensors": len(gptq), "code_ms": code_ms, "rounds": rounds}


def _coding_ms(name: str, entry: dict, hp) -> float:
    """Milliseconds to code and write one quantised tensor with the run's codec (a scratch file)."""
    with tempfile.TemporaryDirectory() as scratch:
        t0 = time.perf_counter()
        save_artifact(os.path.join(scratch, "probe.lgz"), {}, model_config={}, tokenizer_sha256="",
                      scheme=hp.quant_scheme, codec=hp.codec, entries={name: entry})
        return 1000 * (time.perf_counter() - t0)


def _holds(path: str, data: bytes) -> bool:
    if not os.path.exists(path) or os.path.getsize(path) != len(data):
        return False
    with open(path, "rb") as f:
        return f.read() == data


def share_artifact(path: str, rank: int) -> None:
    """Rank 0's artifact on every rank's disk, as bytes over the process group: ranks on nodes
    without a shared filesystem reload exactly the file rank 0 wrote."""
    data = None
    if rank == 0:
        with open(path, "rb") as f:
            data = f.read()
    data = broadcast_bytes(data, 0)
    if rank != 0 and not _holds(path, data):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
