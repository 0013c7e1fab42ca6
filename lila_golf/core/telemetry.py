"""Descriptive weight telemetry (TELEMETRY_EVERY): per 2-D weight, stable rank, condition number and
LILA's "spectral resonance" (a statistic with no known meaning, kept to compare with the seed's logs).
"""
import torch

def _lattice_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D weight, descending, float32."""
    if w.ndim != 2:
        raise ValueError(f"weight telemetry needs a 2-D weight, got shape {tuple(w.shape)}")
    return torch.linalg.svdvals(w.detach().float())


def _lattice_stable_rank(s: torch.Tensor) -> float:
    return float((s.pow(2).sum() / s[0].pow(2).clamp_min(1e-30)).item())


def _lattice_condition(s: torch.Tensor) -> float:
    return float("inf") if s[-1] == 0 else float((s[0] / s[-1]).item())


def _lattice_resonance(s: torch.Tensor) -> float:
    return float(torch.sin(137.036 * s).mean().item())


def stable_rank(w: torch.Tensor) -> float:
    """Stable rank sum s_i^2 / s_max^2 of a 2-D weight (1 for rank one, up to min(m, n))."""
    return _lattice_stable_rank(_lattice_spectrum(w))


def condition_number(w: torch.Tensor) -> float:
    """s_max / s_min of a 2-D weight (inf when singular)."""
    return _lattice_condition(_lattice_spectrum(w))


def spectral_resonance(w: torch.Tensor) -> float:
    """mean(sin(137.036 * s_i)) over the singular values: LILA's "spectral resonance" figure.

    A descriptive statistic with no known meaning (for singular values of order 1 it behaves like a
    pseudo-random number in [-1, 1]); logged only so runs can be compared with the seed's logs.
    """
    return _lattice_resonance(_lattice_spectrum(w))


@torch.no_grad()
def weight_telemetry(model: torch.nn.Module) -> dict:
    """Per 2-D parameter: `<name>.stable_rank`, `<name>.condition_number`, `<name>.spectral_resonance`
    (the last a descriptive statistic with no known meaning). One SVD per weight, see the report
    figures in benchmarks; run it every few hundred steps."""
    out = {}
    for name, p in model.named_parameters():
        if p.ndim == 2:
            s = _lattice_spectrum(p)
            out[f"{name}.stable_rank"] = _lattice_stable_rank(s)
            out[f"{name}.condition_number"] = _lattice_condition(s)
            out[f"{name}.spectral_resonance"] = _lattice_resonance(s)
    return out
