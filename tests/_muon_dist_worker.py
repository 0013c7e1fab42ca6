"""Worker for the distributed-Muon test: a few Muon steps on fixed matrices, results to .npz.

Launched by tests/test_optim.py as two processes (gloo, CPU):
    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/_muon_dist_worker.py OUT.npz
With WORLD_SIZE=1 (or via run_muon_steps() in-process) it is the single-process reference.
"""
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import lila_golf.core.optim as optim

# Odd count and mixed tall/wide/square shapes, so the round-robin split is uneven across 2 ranks.
SHAPES = [(48, 96), (96, 48), (64, 64), (32, 160), (80, 40)]
STEPS = 3


def make_params() -> list:
    gen = torch.Generator().manual_seed(1234)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in SHAPES]


def make_grads(step: int) -> list:
    # Every rank sees the same gradients, as after DDP's all-reduce.
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(shape, generator=gen) for shape in SHAPES]


def run_muon_steps() -> tuple:
    """(final params as numpy arrays, number of Newton-Schulz calls made by this process)."""
    calls = [0]
    original = optim.zeropower_newton_schulz

    def counting(g, steps=5, eps=1e-7, coeffs=None):
        calls[0] += 1
        return original(g, steps=steps, eps=eps, coeffs=coeffs)

    optim.zeropower_newton_schulz = counting
    try:
        params = make_params()
        opt = optim.Muon(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)
        for step in range(STEPS):
            for p, g in zip(params, make_grads(step)):
                p.grad = g
            opt.step()
    finally:
        optim.zeropower_newton_schulz = original
    return [p.detach().numpy().copy() for p in params], calls[0]


def main() -> None:
    out_path = sys.argv[1]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=world)
    try:
        arrays, calls = run_muon_steps()
        if world > 1:  # no rank leaves gloo while its peer still talks (a teardown abort seen in CI)
            dist.barrier()
    finally:
        if world > 1:
            dist.destroy_process_group()
    np.savez(out_path, ns_calls=np.array(calls), **{f"p{i}": a for i, a in enumerate(arrays)})


if __name__ == "__main__":
    main()
