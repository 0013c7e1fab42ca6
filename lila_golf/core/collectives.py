"""Collectives: every torch.distributed call of a run goes through these helpers.

NCCL takes CUDA tensors only and gloo CPU tensors only, while a run's tensors live on either (GPTQ
Hessians are gathered on the CPU, losses and gradients sit on the GPU). Each helper moves its tensor
to the backend's device, runs the collective there and copies the result back in place, so a caller
never has to know which backend runs. Outside torch.distributed (one process) they do nothing.

    all_reduce_(hessian)                 # sum over ranks, in place, wherever hessian lives
    all_reduce_(stop_flag, op="max")
    broadcast_(tensor, src=0); data = broadcast_bytes(data, src=0); barrier()
"""
from __future__ import annotations

import torch
import torch.distributed as dist

REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_distributed() -> bool:
    """A process group exists (of any size: one rank under NCCL still takes only CUDA tensors)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend_device() -> torch.device:
    """The device the process group's backend takes tensors on (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _on_backend(tensor: torch.Tensor) -> torch.Tensor:
    device = backend_device()
    return tensor if tensor.device == device and tensor.is_contiguous() else tensor.to(device).contiguous()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` over all ranks in place (op sum | max | min); returns it."""
    if op not in REDUCE_OPS:
        raise ValueError(f"all_reduce op must be one of {sorted(REDUCE_OPS)}, got {op!r}")
    if not is_distributed():
        return tensor
    buf = _on_backend(tensor)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, REDUCE_OPS[op]))
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` on every rank with rank `src`'s, in place; returns it."""
    if not is_distributed():
        return tensor
    buf = _on_backend(tensor)
    dist.broadcast(buf, src=src)
    if buf is not tensor:
        tensor.copy_(buf)
    return tensor


def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """Rank `src`'s bytes on every rank (its length first, then the bytes as a uint8 tensor):
    how files travel between ranks that may not share a filesystem."""
    if not is_distributed():
        return data
    mine = dist.get_rank() == src
    size = broadcast_(torch.tensor([len(data) if mine else 0], dtype=torch.int64), src)
    n = int(size.item())
    if n == 0:
        return b""
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if mine else torch.empty(n, dtype=torch.uint8)
    broadcast_(buf, src)
    return data if mine else buf.numpy().tobytes()


def barrier() -> None:
    if is_distributed():
        # NCCL's barrier runs on the current GPU; give it the device so it never guesses
        dist.barrier(device_ids=[torch.cuda.current_device()]) if dist.get_backend() == "nccl" else dist.barrier()


def init_distributed(device: torch.device) -> None:
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # every rank leaves together: a rank tearing gloo down while a peer still talks aborts it
        # ("terminate called without an active exception", seen once in CI on 2 processes)
        barrier()
        dist.destroy_process_group()
