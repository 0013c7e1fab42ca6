"""Bit allocation under a byte budget: measured sensitivities -> a per-tensor quantisation plan whose
artifact lands just under the budget.

Sensitivity model (a Kronecker-factored second-order expansion of the training loss, from training
batches only): for a linear layer y = W x, quantising W by dW raises the mean loss by about

    dL ~ 1/2 * sum_r g_r * (dw_r H dw_r^T),   H = mean_t x_t x_t^T,   g_r = mean_t (N dL/dy_{t,r})^2

(N tokens, dL/dy the gradient of their mean loss; g_r is the empirical Fisher of output r). An
embedding read by lookup has H = I and g_r = (1/N) sum over the tokens that read row r of
|N dL/de_t|^2 / cols; the tied embedding adds both uses. With GPTQ, dw_r H dw_r^T ~ kappa * step_r^2 / 12, kappa = sum_c 1/U_cc^2 (U the Cholesky
factor of H^-1 in GPTQ's column order), and a row coded at step s costs ~cols * log2(sigma / s) bits.
Minimising dL at a fixed number of bits gives every row the same slope:

    step_r = sqrt(mu / (g_r * kappa_t))         (one multiplier mu for the whole model)

which is what the Fisher-shaped schemes int{b}_fs(gptq)_k{k} encode (quant.py): k_t carries the
tensor's mean step, the row shaping sqrt(mean(g) / g_r) comes from the row weights. `allocate`
searches mu so that the coded artifact just fits the budget: a fast estimate (round-to-nearest
symbols, their zero-order entropy) for the bisection, then real exports to correct it.

Usage:
    hessians, row_weights = calibrate(model, [(x, y), ...])
    plan = allocate(state, hessians, row_weights, budget_bytes, export)   # export(plan) -> bytes
"""
import math
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ARTIFACT_LIMIT_BYTES
from .quant import _gptq_prepare, parse_spec, quant_k_base, quant_k_scale, QUANT_CONTROL_PATTERNS, QUANT_FLOAT_SCHEMES
from .model import lm_loss, rms_norm

BITALLOC_MIN_BYTES_SAVED = 1024  # quantise a float tensor only when that saves at least this much
BITALLOC_CODER_SLACK = 1.01  # coded bytes / estimated bytes assumed before the first real export
BITALLOC_ROUNDS = 4  # real exports at most (plus one to rewrite the best, if it was not the last)
BITALLOC_TOLERANCE = 0.002  # stop once an export lands within 0.2% under the budget


def calibrate(model: nn.Module, batches, all_reduce=None) -> tuple[dict, dict]:
    """(hessians, row_weights) of every nn.Linear and nn.Embedding weight (the tied embedding's
    Hessian from the output head's input), keyed by state_dict name, float32 on CPU; H is the
    mean of x x^T over the tokens (its scale does not matter to GPTQ). batches:
    (x, y) token tensors (B, T) from the training data. all_reduce: called on every summed
    tensor before normalising (e.g. torch.distributed.all_reduce under DDP)."""
    H, g, g_in, ctx = {}, {}, {}, {"n": 0}
    hooks = []
    for mod_name, m in model.named_modules():
        key = f"{mod_name}.weight"
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(_bitalloc_acc_input(H, key)))
            hooks.append(m.register_full_backward_hook(_bitalloc_acc_grad(g, key, ctx)))
        elif isinstance(m, nn.Embedding):
            hooks.append(m.register_forward_hook(lambda mod, inp, out, key=key: ctx.__setitem__(key, inp[0].reshape(-1))))
            hooks.append(m.register_full_backward_hook(_bitalloc_acc_lookup(g_in, key, ctx, m.num_embeddings)))
    was_training, n_total = model.training, 0
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # int inputs have no grad
            for x, y in batches:
                ctx["n"] = y.numel()
                n_total += y.numel()
                _bitalloc_head_pass(model, x, y, H, g, ctx)
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    n = torch.tensor(float(n_total))
    for t in [n, *H.values(), *g.values(), *g_in.values()]:
        if all_reduce is not None:
            all_reduce(t)
    return _bitalloc_row_weights(H, g, g_in, float(n))


def _bitalloc_acc_input(H: dict, key: str):
    def hook(module, inputs, output):
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # (tokens, in)
        H[key] = H[key] + x.T @ x if key in H else x.T @ x
    return hook


def _bitalloc_acc_grad(g: dict, key: str, ctx: dict):
    def hook(module, grad_input, grad_output):
        go = grad_output[0].detach().reshape(-1, grad_output[0].shape[-1]).float() * ctx["n"]  # per-token
        g[key] = g[key] + go.pow(2).sum(0) if key in g else go.pow(2).sum(0)
    return hook


def _bitalloc_acc_lookup(g_in: dict, key: str, ctx: dict, rows: int):
    def hook(module, grad_input, grad_output):
        go = grad_output[0].detach().reshape(-1, grad_output[0].shape[-1]).float() * ctx["n"]
        acc = g_in.setdefault(key, torch.zeros(rows, device=go.device))
        acc.index_add_(0, ctx[key].to(go.device), go.pow(2).mean(1))
    return hook


def _bitalloc_head_pass(model, x, y, H: dict, g: dict, ctx: dict) -> None:
    """Forward + backward of the training loss with the tied head done by hand, so that its input
    (the normed final state) and its output gradient are seen like a linear layer's."""
    key = "tok_emb.weight"
    hn = rms_norm(model.hidden(x))
    z = F.linear(hn, model.tok_emb.weight)
    flat = hn.detach().reshape(-1, hn.shape[-1]).float()
    H[key] = H[key] + flat.T @ flat if key in H else flat.T @ flat
    z.register_hook(_bitalloc_acc_grad_tensor(g, key, ctx))
    cap = model.cfg.logit_softcap
    lm_loss(cap * torch.tanh(z / cap) if cap > 0 else z, y).backward()


def _bitalloc_acc_grad_tensor(g: dict, key: str, ctx: dict):
    hook = _bitalloc_acc_grad(g, key, ctx)
    return lambda grad: hook(None, None, (grad,))


def _bitalloc_row_weights(H: dict, g: dict, g_in: dict, n_total: float) -> tuple[dict, dict]:
    """Normalise to the module doc's units; lookups read through H = I, and the tied embedding's
    lookup term joins its head term as g_head + g_in * cols / kappa."""
    hessians = {k: (v / n_total).cpu() for k, v in H.items()}
    weights = {k: (v / n_total).cpu() for k, v in g.items()}
    for key, v in g_in.items():
        v = (v / n_total).cpu()
        if key in weights and key in hessians:
            weights[key] = weights[key] + v * hessians[key].shape[0] / gptq_error_factor(hessians[key])
        else:
            weights[key] = v
    return hessians, weights


@torch.no_grad()
def probe_row_weights(model: nn.Module, batches, hessians: dict, row_weights: dict, plan: dict,
                      seed: int = 0, clamp: float = 10.0) -> dict:
    """Correct each tensor's row weights by a loss probe on training batches: add noise d of the
    plan's row steps (uniform in +-step/2, like rounding error) and -d, measure the mean loss rise
    (L(W+d) + L(W-d)) / 2 - L(W) (first-order terms cancel) and scale g by measured / predicted,
    the prediction being the module doc's formula; factors clamped to [1/clamp, clamp]."""
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    n = sum(int(y.numel()) for _, y in batches)

    def loss():
        return sum(float(model(x, y)) * y.numel() for x, y in batches) / n
    was_training = model.training
    model.eval()
    base, out = loss(), dict(row_weights)
    for name, scheme in plan.items():
        spec = parse_spec(scheme)
        if spec["kind"] in ("float", "raw", "int8") or name not in row_weights or name not in params:
            continue
        w = params[name]
        rows = w.detach().float().reshape(w.shape[0], -1).cpu()
        step = quant_k_scale(rows, spec, row_weights[name]).float()
        d = (torch.rand(rows.shape, generator=gen) - 0.5) * step[:, None]
        H = hessians.get(name)
        quad = (d * d).sum(1) if H is None else ((d @ H) * d).sum(1)
        predicted = float((row_weights[name] * quad).sum()) / 2
        w.add_(d.reshape(w.shape).to(w.device, w.dtype))
        up = loss()
        w.sub_(2 * d.reshape(w.shape).to(w.device, w.dtype))
        down = loss()
        w.add_(d.reshape(w.shape).to(w.device, w.dtype))
        measured = (up + down) / 2 - base
        factor = min(max(measured / predicted, 1 / clamp), clamp) if predicted > 0 else 1.0
        out[name] = row_weights[name] * factor
    model.train(was_training)
    return out


def gptq_error_factor(H: torch.Tensor | None, cols: int | None = None) -> float:
    """kappa: output error dw H dw^T of a row quantised by GPTQ at step s is ~ kappa * s^2 / 12
    (sum_c 1/U_cc^2); without H (a lookup, H = I) it is the number of columns."""
    if H is None:
        return float(cols)
    _, Hinv, _ = _gptq_prepare(H, H.shape[0], 0.01, True)
    return float((1.0 / torch.diagonal(Hinv).double().pow(2)).sum())


def plan_by_bytes(name: str, tensor: torch.Tensor, scheme: str, bits: float = 4.0,
                  min_saved: int = BITALLOC_MIN_BYTES_SAVED) -> str:
    """The small-tensor rule by bytes, not elements: a float tensor is quantised with `scheme` when
    that saves at least `min_saved` bytes over fp16 at ~`bits` a weight plus a 2-byte scale per
    row; control tensors (gains, mixes) stay fp32, non-float tensors raw, the rest fp16."""
    if not tensor.is_floating_point():
        return "raw"
    if any(p in name for p in QUANT_CONTROL_PATTERNS) and tensor.ndim < 2:
        return "fp32"
    rows = tensor.shape[0] if tensor.ndim >= 2 else 1
    saved = tensor.numel() * (16 - bits) / 8 - 2 * rows
    return scheme if tensor.ndim >= 2 and saved >= min_saved else "fp16"


def fisher_plan(state: dict, hessians: dict, row_weights: dict, mu: float, gptq: bool = True,
                suffix: str = "", max_bits: int = 8, shape: str = "fs") -> dict:
    """The plan at multiplier mu (module doc): per quantised tensor int{b}_fs(gptq)_k{k}{suffix},
    k from the tensor's mean step, b the smallest width that holds the largest |w| / step_r.
    shape "sd": the same tensor steps, rows shaped by SDClip (std) instead of by g_r."""
    plan = {}
    for name, w in state.items():
        base = plan_by_bytes(name, w, "int8_fs_k1")
        if base in QUANT_FLOAT_SCHEMES + ("raw",) or name not in row_weights:
            plan[name] = base if name in row_weights or base != "int8_fs_k1" else "fp16"
            continue
        plan[name] = _bitalloc_tensor_scheme(w, hessians.get(name), row_weights[name], mu, gptq, suffix, max_bits, shape)
    return plan


def _bitalloc_tensor_scheme(w, H, g, mu, gptq, suffix, max_bits, shape) -> str:
    rows = w.detach().float().reshape(w.shape[0], -1)
    kappa = gptq_error_factor(H, rows.shape[1])
    g_mean = max(float(g.double().mean()), 1e-30)
    step = math.sqrt(mu / (g_mean * kappa))  # the mean row's step
    sigma = max(float(rows.std(correction=0)), 1e-12)
    method = shape + ("gptq" if gptq and H is not None else "")
    base = quant_k_base(rows, {"kind": method}, g).double().clamp_min(1e-30)
    ratio = rows.abs().amax(1).double() / base  # per row: the k at which that row stops clipping
    for bits in range(2, max_bits + 1):
        k = _bitalloc_round_k(step * (2 ** (bits - 1) - 1) / sigma)
        # the narrowest width at which (nearly) every row fits: fs widens the few that do not; sd,
        # which clips instead, only takes a width where none does
        fits = float((ratio <= k).double().mean()) >= (0.99 if shape == "fs" else 1.0)
        if fits or bits == max_bits:
            if shape == "sd":
                k = max(k, _bitalloc_round_k(float(ratio.max()) * 1.001))
            return f"int{bits}_{method}_k{np.format_float_positional(k, trim='-')}{suffix}"


def _bitalloc_round_k(k: float) -> float:
    """k to 4 significant digits, as the scheme string will carry it."""
    return float(np.format_float_positional(k, precision=4, unique=False, fractional=False, trim="-"))


def estimate_bytes(state: dict, plan: dict, row_weights: dict) -> float:
    """Fast size estimate of a plan: round-to-nearest symbols at each tensor's scales, their
    zero-order entropy per tensor, 2 bytes a scale, fp16/fp32 tensors at full size."""
    total = 0.0
    for name, w in state.items():
        spec = parse_spec(plan[name])
        if spec["kind"] in ("float", "raw"):
            total += w.numel() * (4 if plan[name] == "fp32" else 2 if spec["kind"] == "float" else w.element_size())
            continue
        rows = w.detach().float().reshape(w.shape[0], -1)
        s = quant_k_scale(rows, spec, row_weights.get(name)).float()
        qmax = 2 ** (spec["bits"] - 1) - 1
        q = torch.clamp(torch.round(rows / s[:, None]), -qmax, qmax).to(torch.int64).numpy()
        counts = np.bincount((q + qmax).ravel())
        p = counts[counts > 0] / q.size
        total += float(-(counts[counts > 0] * np.log2(p)).sum()) / 8 + 2 * rows.shape[0]
    return total


def allocate(state: dict, hessians: dict, row_weights: dict, budget_bytes: int, export,
             mu_range=(1e-12, 1e2), gptq: bool = True, suffix: str = "", shape: str = "fs") -> tuple[dict, int]:
    """The plan (fisher_plan) whose export fits budget_bytes most tightly: bisection on log(mu)
    over the estimate times the coded/estimated ratio of the last real export; `export(plan)`
    writes the artifact and returns its bytes. Returns (plan, bytes) of the best export that fits;
    raises ValueError when even the coarsest plan does not fit."""
    ratio, best, last = BITALLOC_CODER_SLACK, None, None
    lo, hi = math.log(mu_range[0]), math.log(mu_range[1])
    for _ in range(BITALLOC_ROUNDS):
        def fits(log_mu):
            plan = fisher_plan(state, hessians, row_weights, math.exp(log_mu), gptq, suffix, shape=shape)
            return estimate_bytes(state, plan, row_weights) * ratio <= budget_bytes
        plan = fisher_plan(state, hessians, row_weights, math.exp(_bitalloc_bisect(fits, lo, hi)), gptq, suffix, shape=shape)
        if last is not None and plan == last[0]:
            break  # the same plan again (e.g. every tensor already at its widest): nothing more to try
        last = (plan, export(plan))
        if last[1] <= budget_bytes and (best is None or last[1] > best[1]):
            best = last
        if best is not None and best[1] >= (1 - BITALLOC_TOLERANCE) * budget_bytes:
            break
        # the coded size over the estimate, a hair more when it overshot: the next target
        ratio = last[1] / estimate_bytes(state, plan, row_weights) * (1.002 if last[1] > budget_bytes else 1.0)
    if best is None:
        raise ValueError(f"no plan fits {budget_bytes} bytes (the last try took {last[1]} bytes)")
    if best is not last:
        export(best[0])  # leave the chosen artifact as the last one written
    return best


def budget_bytes(code_bytes: int, margin: int, limit: int = ARTIFACT_LIMIT_BYTES) -> int:
    """The model's byte budget: the challenge limit minus the code that counts minus a margin."""
    return limit - code_bytes - margin


def _bitalloc_bisect(fits, lo: float, hi: float, steps: int = 30) -> float:
    """Smallest log(mu) in [lo, hi] for which fits() holds (fits is monotone in mu)."""
    if fits(lo):
        return lo
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi
