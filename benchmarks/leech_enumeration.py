"""Leech lattice benchmarks: the Fincke-Pohst proof of the basis, and the cost of the exact max cosine.

    .venv/bin/python benchmarks/leech_enumeration.py            # full run (~1-2 min on 2 CPU cores)
    .venv/bin/python benchmarks/leech_enumeration.py --quick    # skip the training-size batch
    .venv/bin/python benchmarks/leech_enumeration.py --quick --threads 1   # CPU cost on a busy machine

Prints key:value lines. Part 1 enumerates every vector of norm <= 4 of the Leech lattice over the
LLL-reduced Hermite-normal-form basis (expect 0 of norm 2 and 196,560 of norm 4, equal to the
constructed minimal vectors). Part 2 times leech_max_cosine (structured search) against the brute
force matmul over all 196,560 minimal vectors, for 4,096 blocks and for a training-size batch
(8 x 1024 tokens x 512 dims / 24 = 174,762 blocks). The machine load is printed with the figures.
"""
import argparse
import os
import time

import numpy as np
import torch

from lila_golf.core.lattice import leech_basis, leech_max_cosine, leech_resonance_loss, lll_reduce
from lila_golf.research.leech import leech_max_cosine_bruteforce, leech_min_vectors, short_vectors


def timed(fn, repeats: int = 1) -> tuple:
    """(best wall seconds, best process CPU seconds over repeats, result of the last call). CPU
    seconds are the fairer figure on a shared machine; wall seconds include waiting for a core."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu, out


def bench_enumeration() -> None:
    """Reduce the basis and enumerate all vectors of norm <= 2 and <= 4."""
    t_basis, _, basis = timed(lambda: leech_basis(scaled=False))
    t_lll, _, reduced = timed(lambda: lll_reduce(basis))
    gram = reduced @ reduced.T // 8
    t_two, _, two = timed(lambda: short_vectors(gram, 2), 3)
    t_four, c_four, four = timed(lambda: short_vectors(gram, 4), 3)
    vecs = four @ reduced
    match = {v.tobytes() for v in np.concatenate([vecs, -vecs])} == \
        {v.tobytes() for v in leech_min_vectors(scaled=False).astype(np.int64)}
    print(f"hnf_s:{t_basis:.4f} lll_s:{t_lll:.3f}")
    print(f"enum_norm_le2_vectors:{2 * len(two)} enum_norm_le2_s:{t_two:.4f}")
    print(f"enum_norm_le4_vectors:{2 * len(four)} enum_norm_le4_s:{t_four:.3f} enum_norm_le4_cpu_s:{c_four:.3f} "
          f"equals_constructed_min_vectors:{match}")


def bench_max_cosine(quick: bool) -> None:
    """Structured search vs brute force, float32, forward only and forward + backward."""
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randn(4096, 24, generator=gen)
    leech_max_cosine(blocks[:8]), leech_max_cosine_bruteforce(blocks[:8])   # build caches
    t_fast, c_fast, fast = timed(lambda: leech_max_cosine(blocks), 3)
    t_brute, c_brute, brute = timed(lambda: leech_max_cosine_bruteforce(blocks), 2)
    print(f"blocks:4096 structured_s:{t_fast:.3f} structured_cpu_s:{c_fast:.3f} "
          f"bruteforce_s:{t_brute:.3f} bruteforce_cpu_s:{c_brute:.3f} speedup_cpu:{c_brute / c_fast:.1f} "
          f"max_abs_diff:{(fast - brute).abs().max().item():.2e}")
    if quick:
        return
    big = torch.randn(8 * 1024 * 512 // 24, 24, generator=gen, requires_grad=True)
    t_big, c_big, _ = timed(lambda: leech_max_cosine(big.detach()))
    t_bwd, c_bwd, _ = timed(lambda: leech_resonance_loss(big, 0.01).backward())
    t_sub, c_sub, _ = timed(lambda: leech_resonance_loss(big, 0.01, max_blocks=4096).backward(), 3)
    print(f"blocks:{big.shape[0]} structured_s:{t_big:.2f} structured_cpu_s:{c_big:.2f} "
          f"loss_fwd_bwd_s:{t_bwd:.2f} loss_fwd_bwd_cpu_s:{c_bwd:.2f} "
          f"bruteforce_cpu_s_extrapolated:{c_brute * big.shape[0] / 4096:.1f} "
          f"loss_max_blocks_4096_fwd_bwd_s:{t_sub:.3f} loss_max_blocks_4096_fwd_bwd_cpu_s:{c_sub:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the training-size batch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch:{torch.__version__} threads:{torch.get_num_threads()} cpus:{os.cpu_count()} "
          f"loadavg_1m:{os.getloadavg()[0]:.2f}")
    bench_enumeration()
    bench_max_cosine(args.quick)
    print(f"loadavg_1m_end:{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
