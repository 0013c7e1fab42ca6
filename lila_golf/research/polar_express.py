"""Derive the Polar-Express Newton-Schulz coefficients that core/optim.py uses (MUON_NS=polar_express).

    python -m lila_golf.research.polar_express            # prints the (a, b, c) per iteration

Newton-Schulz for Muon maps every singular value s of the Frobenius-normalised momentum through an
odd quintic p(s) = a s + b s^3 + c s^5, several times. Keller Jordan's quintic uses one (a, b, c)
for every step. Polar Express (Amsel, Persson, Musco, Gower 2025, arXiv 2505.16932) instead picks,
for each step k, the odd quintic that is minimax-closest to 1 on the interval [l_k, u_k] where the
singular values are known to lie; that polynomial maps [l_k, u_k] into [1 - E_k, 1 + E_k], which is
the next step's interval. Starting from [l_0, 1] (the Frobenius norm bounds the top singular value),
the band narrows as fast as an odd quintic allows.

Each step's minimax polynomial is found by the Remez exchange: the error 1 - p equioscillates at
four points (the two ends and the two interior extrema, which are the positive roots of
p'(s) = a + 3 b s^2 + 5 c s^4, a quadratic in s^2). `margin` widens each design interval at the top
(u_k (1 + margin)) so that values a little above u_k (bf16 rounding) are still mapped into the band.
"""
from __future__ import annotations

import argparse
import math

import numpy as np


def _remez_solve(points: np.ndarray) -> tuple[float, float, float, float]:
    """(a, b, c, E) with 1 - p(x_i) = (+E, -E, +E, -E) at the four points."""
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    A = np.stack([points, points ** 3, points ** 5, signs], axis=1)
    a, b, c, e = np.linalg.solve(A, np.ones(4))
    return float(a), float(b), float(c), float(e)


def _interior_extrema(a: float, b: float, c: float, lo: float, hi: float) -> list[float]:
    """Positive roots of p'(s) = a + 3 b s^2 + 5 c s^4 inside (lo, hi), ascending."""
    roots = np.roots([5 * c, 3 * b, a]) if c != 0 else np.array([-a / (3 * b)])
    return sorted(math.sqrt(r.real) for r in roots if abs(r.imag) < 1e-12 and lo ** 2 < r.real < hi ** 2)


def minimax_odd_quintic(lo: float, hi: float, iterations: int = 60) -> tuple[float, float, float, float]:
    """The odd quintic closest to 1 in max norm on [lo, hi] (Remez exchange): (a, b, c, E)."""
    points = np.array([lo, lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3, hi])
    for _ in range(iterations):
        a, b, c, e = _remez_solve(points)
        inner = _interior_extrema(a, b, c, lo, hi)
        if len(inner) != 2:
            raise ArithmeticError(f"Remez on [{lo}, {hi}] lost its equioscillation points")
        new = np.array([lo, inner[0], inner[1], hi])
        if np.allclose(new, points, rtol=0, atol=1e-15):
            break
        points = new
    return a, b, c, abs(e)


def polar_express_coeffs(steps: int = 5, lower: float = 1e-3, margin: float = 0.02) -> list[tuple[float, float, float]]:
    """(a, b, c) for each of `steps` Newton-Schulz iterations, for singular values in [lower, 1]."""
    lo, hi, coeffs = lower, 1.0, []
    for _ in range(steps):
        a, b, c, e = minimax_odd_quintic(lo, hi * (1 + margin))
        coeffs.append((a, b, c))
        lo, hi = 1 - e, 1 + e
    return coeffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lower", type=float, default=1e-3, help="smallest normalised singular value designed for")
    p.add_argument("--margin", type=float, default=0.02, help="relative widening of each interval's top")
    args = p.parse_args()
    for k, (a, b, c) in enumerate(polar_express_coeffs(args.steps, args.lower, args.margin)):
        print(f"step {k}: ({a!r}, {b!r}, {c!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
