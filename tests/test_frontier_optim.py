"""Optimiser and schedule options of issue 17: Polar-Express Newton-Schulz, row-normalised Muon,
per-group Adam beta2 / weight decay, warmdown by fraction with an lr floor, context-length growth,
depth recurrence switched on during a run."""
import re

import pytest
import torch
from torch import nn

from lila_golf.core.optim import (POLAR_EXPRESS_COEFFS, Muon, build_optimizers, lr_scale, seq_len_at,
                                  training_progress, zeropower_newton_schulz)
from lila_golf.research.polar_express import minimax_odd_quintic, polar_express_coeffs
from lila_golf.core.config import Hyperparameters


def test_polar_express_coefficients_are_the_derived_ones():
    derived = polar_express_coeffs(steps=5, lower=1e-3, margin=0.02)
    assert torch.allclose(torch.tensor(derived, dtype=torch.float64),
                          torch.tensor(POLAR_EXPRESS_COEFFS, dtype=torch.float64), rtol=1e-9, atol=0)


def test_minimax_quintic_equioscillates():
    a, b, c, e = minimax_odd_quintic(0.1, 1.0)
    s = torch.linspace(0.1, 1.0, 20001, dtype=torch.float64)
    err = 1 - (a * s + b * s ** 3 + c * s ** 5)
    assert abs(err.abs().max().item() - e) < 1e-9  # the max error is E, reached ...
    assert err[0].item() == pytest.approx(e) and err[-1].item() == pytest.approx(-e)  # ... at both ends


def spectrum_matrix(rows, cols, lo, hi, seed=0):
    """rows x cols with singular values log-spaced in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    n = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, n, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, n, generator=g))
    return u @ torch.diag(torch.logspace(lo, hi, n)) @ v.T


@pytest.mark.parametrize("make", [
    lambda: torch.randn(256, 512, generator=torch.Generator().manual_seed(0)),
    lambda: torch.randn(128, 128, generator=torch.Generator().manual_seed(1)),
    lambda: spectrum_matrix(384, 128, -2, 0),
], ids=["gaussian_wide", "gaussian_square", "two_decades"])
def test_polar_express_lands_singular_values_in_a_tighter_band(make):
    g = make()
    band = {}
    for name, coeffs in (("quintic", None), ("polar", POLAR_EXPRESS_COEFFS)):
        sv = torch.linalg.svdvals(zeropower_newton_schulz(g, steps=5, coeffs=coeffs).double())
        band[name] = (sv - 1).abs().max().item()
    assert band["polar"] < band["quintic"], band
    assert band["polar"] < 0.65


def test_row_normalised_muon_ignores_the_scale_of_each_gradient_row():
    """MuonEq-R: each momentum row is put at unit norm before Newton-Schulz, so rescaling rows of
    the gradient (positive factors) gives the same update; plain Muon's update changes."""
    g = torch.randn(48, 96, generator=torch.Generator().manual_seed(3))
    rows = torch.logspace(-1, 1, 48)[:, None]
    for row_normalize in (True, False):
        steps = []
        for grad in (g, rows * g):
            p = nn.Parameter(torch.zeros(48, 96))
            opt = Muon([p], lr=1.0, momentum=0.9, row_normalize=row_normalize)
            p.grad = grad
            opt.step()
            steps.append(p.detach().clone())
        assert torch.allclose(steps[0], steps[1], atol=1e-5) == row_normalize


def test_muon_polar_express_option_changes_the_update():
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(4))
    out = []
    for ns in ("quintic", "polar_express"):
        p = nn.Parameter(torch.zeros(32, 64))
        opt = Muon([p], lr=1.0, ns=ns)
        p.grad = g
        opt.step()
        out.append(torch.linalg.svdvals(p.detach()))
    assert (out[1] - 1).abs().max() < (out[0] - 1).abs().max()
    with pytest.raises(ValueError, match="ns="):
        Muon([nn.Parameter(torch.zeros(2, 2))], ns="cubic")


def test_per_group_adam_beta2_and_weight_decay():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    kw = dict(matrix_lr=0.1, embed_lr=0.2, scalar_lr=0.3, muon_momentum=0.9, muon_backend_steps=5,
              muon_weight_decay=0.0, adam_weight_decay=0.085, beta1=0.9, beta2=0.95, adam_eps=1e-8)
    adam = build_optimizers(model, **kw, embed_beta2=0.99, scalar_beta2=0.999, scalar_weight_decay=0.02)[1]
    groups = {g["group_name"]: g for g in adam.param_groups}
    assert groups["embed"]["betas"] == (0.9, 0.99) and groups["scalar"]["betas"] == (0.9, 0.999)
    assert groups["embed"]["weight_decay"] == 0.085 and groups["scalar"]["weight_decay"] == 0.02
    plain = {g["group_name"]: g for g in build_optimizers(model, **kw)[1].param_groups}
    assert plain["embed"]["betas"] == plain["scalar"]["betas"] == (0.9, 0.95) and plain["scalar"]["weight_decay"] == 0.0


def test_training_progress_takes_the_further_limit():
    assert training_progress(50, 0.0, 100, 0) == 0.5
    assert training_progress(50, 450_000.0, 100, 600_000.0) == 0.75
    assert training_progress(10, 700_000.0, 100, 600_000.0) == 1.0


def test_warmdown_fraction_of_wall_clock_with_an_lr_floor():
    kw = dict(warmup_steps=0, warmdown_steps=0, iterations=100_000, max_wallclock_ms=600_000.0, warmdown_frac=0.5)
    assert lr_scale(10, 100_000.0, **kw) == 1.0  # progress 1/6: before the warmdown
    assert lr_scale(10, 450_000.0, **kw) == pytest.approx(0.5)  # progress 0.75: halfway down
    assert lr_scale(10, 600_000.0, **kw) == 0.0
    assert lr_scale(10, 450_000.0, **kw, min_lr=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_scale(10, 600_000.0, **kw, min_lr=0.1) == pytest.approx(0.1)
    steps = dict(warmup_steps=0, warmdown_steps=10, iterations=100, max_wallclock_ms=0)
    assert lr_scale(100, 0.0, **steps, min_lr=0.2) == pytest.approx(0.2)  # the floor holds for step warmdown too
    assert lr_scale(95, 0.0, **steps, min_lr=0.2) == pytest.approx(0.2 + 0.8 * 0.5)


def test_warmdown_fraction_above_one_starts_below_the_peak():
    """PRESET=cpu_track's WARMDOWN_FRAC 1.5: the lr starts at 2/3 and falls linearly to 0 with the clock."""
    kw = dict(warmup_steps=0, warmdown_steps=0, iterations=100_000, max_wallclock_ms=600_000.0, warmdown_frac=1.5)
    assert lr_scale(0, 0.0, **kw) == pytest.approx(2 / 3)
    assert lr_scale(50, 300_000.0, **kw) == pytest.approx(1 / 3)
    assert lr_scale(90, 600_000.0, **kw) == 0.0
    with pytest.raises(ValueError, match="WARMDOWN_FRAC"):
        Hyperparameters.from_env({"PRESET": "test", "WARMDOWN_FRAC": "-0.5"})


def test_context_length_grows_by_doubling():
    lengths = [seq_len_at(p / 100, 256, 2048, 0.3) for p in range(101)]
    assert lengths[0] == 256 and sorted(set(lengths)) == [256, 512, 1024, 2048]
    assert lengths == sorted(lengths) and lengths[30] == 2048
    assert seq_len_at(0.0, 0, 2048, 0.3) == 2048  # off


def test_loop_switches_on_at_its_fraction_and_context_grows(tmp_path, mini_data, sp1024_model):
    from test_train import run_script
    env = {"NUM_LOOPS": "1", "LOOP_START": "0", "LOOP_END": "0", "LOOP_ENABLE_AT": "0.5", "ITERATIONS": "8",
           "SEQ_LEN_START": "16", "SEQ_LEN_WARMUP_FRAC": "0.5", "MUON_NS": "polar_express",
           "MUON_ROW_NORMALIZE": "1", "WARMDOWN_FRAC": "0.5", "MIN_LR": "0.1", "SKIP_GATES": "1"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, run_id="loop")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "looping:on step:4 progress:0.5000 schedule:0,0,1" in log
    assert re.findall(r"seq_len:(\d+) step:(\d+)", log) == [("16", "0"), ("32", "2"), ("64", "4")]
    assert "final_int8_zlib_roundtrip" in log  # the reloaded artifact rebuilds the looping model


def test_a_run_cut_before_the_loop_exports_the_looping_model(tmp_path, mini_data, sp1024_model):
    """The loop never came on (LOOP_ENABLE_AT past the end): it is switched on before the final
    evaluation, so final_float, the artifact and its roundtrip are the same (looping) model."""
    from test_train import run_script
    env = {"NUM_LOOPS": "1", "LOOP_START": "1", "LOOP_END": "1", "LOOP_ENABLE_AT": "0.99", "ITERATIONS": "3"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, run_id="cut")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log.index("train_steps:3") < log.index("looping:on step:3 progress:1.0000") < log.index("final_float")
    final = re.search(r"final_float val_loss:(\S+)", log).group(1)
    roundtrip = re.search(r"final_int8_zlib_roundtrip val_loss:(\S+)", log).group(1)
    assert abs(float(final) - float(roundtrip)) < 0.05  # int8 rounding only, not another model


def test_compile_warmup_visits_every_graph_and_leaves_the_schedule_alone(mini_data, sp1024_model):
    """compile_warmup runs the first graph, then the looping one and every context length (so a
    compiled run compiles them before the clock), and restores the loop-off start without logging."""
    from lila_golf.core.config import DistEnv, Hyperparameters
    from lila_golf.core.train import Trainer, build_model, compile_warmup, warmup_variants
    env = {"PRESET": "test", "DATA_PATH": str(mini_data), "NUM_LOOPS": "1", "LOOP_START": "0", "LOOP_END": "0",
           "LOOP_ENABLE_AT": "0.2", "ITERATIONS": "10", "SEQ_LEN_START": "32", "SEQ_LEN_WARMUP_FRAC": "0.5"}
    hp = Hyperparameters.from_env(env)
    assert warmup_variants(hp) == [(False, 64), (True, 32), (True, 64)]
    lines, cpu = [], torch.device("cpu")
    trainer = Trainer(hp, DistEnv(), cpu, None, build_model(hp, cpu), lines.append)
    seen = []
    forward = trainer.model.forward
    trainer.model.forward = lambda x, *a: seen.append((len(trainer.model.schedule), x.size(1))) or forward(x, *a)
    trainer.forward_model = trainer.model
    compile_warmup(trainer, 3)
    assert set(seen) == {(2, 32), (2, 64), (3, 32), (3, 64)}
    assert not trainer.looping and trainer.model.schedule == [0, 1] and lines == []
