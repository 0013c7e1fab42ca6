"""Plain validation: every target of the val tokens scored once, in non-overlapping windows of
seq_len (the last window shorter: no truncation, no padding), with exact byte accounting."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .collectives import all_reduce_


def window_starts(num_targets: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, length) of each window; window i predicts targets start+1 .. start+length."""
    return [(s, min(seq_len, num_targets - s)) for s in range(0, num_targets, seq_len)]


@torch.no_grad()
def eval_val_plain(model, val_tokens: np.ndarray, target_bytes: np.ndarray, seq_len: int, device,
                   *, batch_seqs: int = 8, rank: int = 0, world_size: int = 1, autocast=None) -> dict:
    """val_tokens: (N,) ids; target_bytes: (N-1,) bytes of each target tokens[1:].
    Returns val_loss (nats/token), val_bpb, tokens (targets scored), bytes."""
    num_targets = len(val_tokens) - 1
    if len(target_bytes) != num_targets:
        raise ValueError(f"target_bytes has {len(target_bytes)} entries for {num_targets} targets")
    windows = window_starts(num_targets, seq_len)[rank::world_size]
    tokens = torch.from_numpy(np.asarray(val_tokens, dtype=np.int64))
    nll_sum, scored = 0.0, 0
    byte_sum = 0
    was_training = model.training
    model.eval()
    for i in range(0, len(windows), batch_seqs):
        group = windows[i:i + batch_seqs]
        for length in sorted({n for _, n in group}):  # full windows batched; the short tail alone
            same = [s for s, n in group if n == length]
            x = torch.stack([tokens[s:s + length] for s in same]).to(device)
            y = torch.stack([tokens[s + 1:s + 1 + length] for s in same]).to(device)
            logits = _forward(model, x, autocast)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
            nll_sum += float(nll.double())
            scored += y.numel()
            byte_sum += int(sum(target_bytes[s:s + length].sum() for s in same))
    model.train(was_training)
    totals = torch.tensor([nll_sum, float(scored), float(byte_sum)], dtype=torch.float64, device=device)
    all_reduce_(totals)
    nll_sum, scored, byte_sum = totals.tolist()
    return dict(val_loss=nll_sum / scored, val_bpb=nll_sum / math.log(2) / byte_sum,
                tokens=int(scored), bytes=int(byte_sum))


def _forward(model, x, autocast):
    if autocast is None:
        return model(x)
    with autocast():
        return model(x)
