"""Causal attention on this CPU: torch's SDPA kernels against each other, forward + backward.

    flock /tmp/lila_timed.lock python benchmarks/attn_cpu.py [--threads 1 2] [--reps 5]

Shapes: the parity row's micro-batch (2 x 512 tokens, 8 heads of 32, 4 KV heads) and the CPU
stack's (32 x 256 tokens, 4 heads of 48, 2 KV heads). Backends: SDPA's CPU flash kernel (what
F.scaled_dot_product_attention picks) and SDPA's math backend (QK^T, masked softmax, PV as batched
matmuls). Prints the median ms of forward + backward over --reps after one warm-up call, the max
abs difference of the outputs and gradients, and the machine load.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"parity (2x512, 8/4 heads of 32)": (2, 8, 4, 512, 32), "stack (32x256, 4/2 heads of 48)": (32, 4, 2, 256, 48)}
BACKENDS = {"flash (default)": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}


def fwd_bwd(q, k, v, backend) -> tuple[float, list[torch.Tensor]]:
    for t in (q, k, v):
        t.grad = None
    t0 = time.perf_counter()
    with sdpa_kernel(backend):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    y.square().sum().backward()
    return 1000 * (time.perf_counter() - t0), [y.detach(), q.grad, k.grad, v.grad]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    print(f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, (B, H, K, T, hd) in SHAPES.items():
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(B, h, T, hd, generator=g, requires_grad=True) for h in (H, K, K))
            times, outs = {}, {}
            for label, backend in BACKENDS.items():
                fwd_bwd(q, k, v, backend)
                times[label] = statistics.median(fwd_bwd(q, k, v, backend)[0] for _ in range(args.reps))
                outs[label] = fwd_bwd(q, k, v, backend)[1]
            diff = max(float((a - b).abs().max()) for a, b in zip(*outs.values()))
            print(f"threads {threads} {name}: " + ", ".join(f"{l} {t:.1f} ms" for l, t in times.items())
                  + f", max abs diff {diff:.1e}")
    print(f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
