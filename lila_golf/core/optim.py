"""Optimisers and schedules for lila_golf training (BUNDLED into train_gpt.py).

Muon (momentum + Newton-Schulz orthogonalisation, Keller Jordan's modded-nanogpt) for the hidden
2-D weights, one AdamW for embeddings and scalar/control tensors, the learning-rate schedule of the
challenge baseline (warmup, then a warmdown tied to the step count or to the wall-clock cap), the
Muon momentum warmup, and EMA / SWA averages of the weights.

Typical use in a training loop:

    optimizers = build_optimizers(model, matrix_lr=0.04, embed_lr=0.05, scalar_lr=0.04, ...)
    for step in range(iterations):
        ...loss.backward()...
        scale = lr_scale(step, elapsed_ms, warmup_steps=..., warmdown_steps=..., iterations=...,
                         max_wallclock_ms=600_000)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        optimizers[0].param_groups[0]["momentum"] = muon_momentum_at(step, start=0.85, end=0.95,
                                                                     warmup_steps=500)
        for opt in optimizers:
            opt.step()
        ema.update(model)

Parameter placement (`split_param_groups`): a 2-D parameter can be moved out of Muon either by
setting the attribute `_optim_group` on the parameter (`p._optim_group = "scalar"`; the values are
"matrix", "embed", "scalar") or by a name containing one of `OPTIM_SCALAR_NAME_PATTERNS`.
"""
import math

import torch
import torch.nn as nn

from .collectives import all_reduce_, rank_and_world

# Quintic Newton-Schulz coefficients from Keller Jordan's Muon: chosen to maximise the slope at 0,
# so 5 steps push every singular value into roughly [0.7, 1.2] instead of converging to exactly 1.
MUON_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (arXiv 2505.16932): minimax (a, b, c) per iteration, derived by research/polar_express.py;
# 5 steps map [1e-3, 1] into [0.864, 1.136] (the quintic above: [0.47, 1.20])
POLAR_EXPRESS_COEFFS = (
    (8.305085150352143, -23.66309277945922, 16.875550587833914),
    (4.103924065988998, -2.9319656992917635, 0.526290503562748),
    (3.900819611420283, -2.7968737753255777, 0.5118977094559087),
    (3.278299481012039, -2.36899819888426, 0.46660858902568425),
    (2.2963831009087974, -1.6197818997028182, 0.3902648882006817),
)

# Parameter names (substrings) of small control tensors that stay with Adam even when 2-D, as in
# the challenge baseline (attn/mlp scales, residual mixes, q gains, U-Net skip weights).
OPTIM_SCALAR_NAME_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")
OPTIM_GROUP_NAMES = ("matrix", "embed", "scalar")
MUON_NS_KINDS = ("quintic", "polar_express")


class OptimGroupError(ValueError):
    """A parameter that the placement rules of `split_param_groups` cannot put in a group."""


def zeropower_newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, coeffs=None, dtype=None) -> torch.Tensor:
    """Approximate U V^T of g = U S V^T by the quintic Newton-Schulz iteration (Muon's "zeropower").

    g: (rows, cols). Works on the wide orientation (rows <= cols) so X X^T is the small Gram matrix.
    Computes in `dtype`: by default bfloat16 on CUDA (tensor cores; the iteration tolerates it) and
    float32 elsewhere; returns a tensor of g's shape and dtype. coeffs: (a, b, c) per iteration
    (the last repeats).
    """
    if g.ndim != 2:
        raise ValueError(f"zeropower_newton_schulz needs a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = MUON_NS_COEFFS
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    # Frobenius norm >= spectral norm, so every singular value starts in [0, 1].
    x = x / (x.norm() + eps)
    for i in range(steps):
        if coeffs is not None:
            a, b, c = coeffs[min(i, len(coeffs) - 1)]
        gram = x @ x.T  # (rows, rows)
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x  # a x + b (x x^T) x + c (x x^T)^2 x
    if transposed:
        x = x.T
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz, for 2-D weight matrices.

    Per step and matrix: buf = momentum * buf + grad; g = grad + momentum * buf (nesterov) or buf;
    update = NS(g) * max(1, rows/cols)**0.5; p *= 1 - lr * weight_decay; p -= lr * update.

    Distributed (torch.distributed initialised, world_size > 1, gradients already averaged, e.g. by
    DDP): rank r orthogonalises the matrices with index % world_size == r, writes them into one
    flattened buffer (zeros elsewhere) and an all_reduce(SUM) gives every rank every update, as in
    the challenge baseline. Unlike the baseline, every rank keeps the momentum buffer of every
    matrix (cheap elementwise work), so optimizer state is identical on all ranks and rank 0's
    state_dict is a complete checkpoint.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 backend_steps: int = 5, weight_decay: float = 0.0, ns: str = "quintic",
                 row_normalize: bool = False):
        if lr < 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0 or backend_steps < 1 or ns not in MUON_NS_KINDS:
            raise ValueError(f"Muon: bad hyperparameters lr={lr} momentum={momentum} weight_decay={weight_decay} "
                             f"backend_steps={backend_steps} ns={ns!r}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov,
                        backend_steps=backend_steps, weight_decay=weight_decay)
        if ns != "quintic" or row_normalize:  # only when asked: the plain state stays as it was
            defaults.update(ns=ns, row_normalize=row_normalize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got a parameter of shape "
                                     f"{tuple(p.shape)}; give it to Adam (see split_param_groups)")

    def _muon_direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """Momentum update for p (every rank) and the momentum-smoothed gradient to orthogonalise."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(p.grad)
        g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        if group.get("row_normalize"):  # MuonEq-R: every row at unit norm before orthogonalising
            g = g / g.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(g.dtype)
        return g

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon step over every group; returns closure() when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world = rank_and_world()
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            # One flat buffer for the group's updates (bf16 on CUDA halves the all_reduce bytes).
            flat_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            total = sum(p.numel() for p in params)
            updates = torch.zeros(total, device=params[0].device, dtype=flat_dtype)
            offset = 0
            for i, p in enumerate(params):
                if p.grad is not None:
                    direction = self._muon_direction(p, group)
                    if i % world == rank:
                        coeffs = POLAR_EXPRESS_COEFFS if group.get("ns") == "polar_express" else None
                        u = zeropower_newton_schulz(direction, steps=group["backend_steps"], coeffs=coeffs)
                        u = u * max(1.0, p.size(0) / p.size(1)) ** 0.5
                        updates[offset:offset + p.numel()] = u.reshape(-1).to(flat_dtype)
                offset += p.numel()
            all_reduce_(updates)
            self._muon_apply(params, updates, group)
        return loss

    @staticmethod
    def _muon_apply(params, updates: torch.Tensor, group: dict) -> None:
        """Decoupled weight decay, then p -= lr * update, for every param that has a gradient."""
        lr, wd = group["lr"], group["weight_decay"]
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is not None:
                if wd > 0:
                    p.mul_(1.0 - lr * wd)
                p.add_(updates[offset:offset + n].view_as(p).to(p.dtype), alpha=-lr)
            offset += n


def _optim_owner_types(model: nn.Module) -> dict:
    """id(param) -> set of module classes that hold it directly (tied params have several)."""
    owners: dict = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(type(module))
    return owners


def _optim_place(name: str, p: nn.Parameter, owner_types: set, scalar_patterns) -> str:
    """Group name for one parameter, or OptimGroupError when the rules cannot decide."""
    explicit = getattr(p, "_optim_group", None)
    if explicit is not None:
        if explicit not in OPTIM_GROUP_NAMES:
            raise OptimGroupError(f"parameter {name}: _optim_group={explicit!r} is not one of "
                                  f"{OPTIM_GROUP_NAMES}")
        if explicit == "matrix" and p.ndim != 2:
            raise OptimGroupError(f"parameter {name}: _optim_group='matrix' but shape "
                                  f"{tuple(p.shape)} is not 2-D")
        return explicit
    if any(issubclass(t, nn.Embedding) for t in owner_types):
        return "embed"  # also the tied head: it is the embedding's own tensor
    if p.ndim < 2 or any(pattern in name for pattern in scalar_patterns):
        return "scalar"
    if p.ndim == 2 and any(issubclass(t, nn.Linear) for t in owner_types):
        return "matrix"
    raise OptimGroupError(
        f"parameter {name} of shape {tuple(p.shape)} (held by "
        f"{sorted(t.__name__ for t in owner_types)}) is neither an nn.Linear weight, an embedding "
        f"nor 0/1-D; set p._optim_group to one of {OPTIM_GROUP_NAMES}")


def split_param_groups(model: nn.Module, scalar_patterns=OPTIM_SCALAR_NAME_PATTERNS
                       ) -> dict:
    """Sort every trainable parameter of model into {"matrix", "embed", "scalar"} (by identity).

    Rules, first match wins: the parameter's `_optim_group` attribute; any parameter of an
    nn.Embedding (a tied head shares that tensor and is counted once) -> "embed"; 0/1-D or a name
    containing one of scalar_patterns -> "scalar"; a 2-D nn.Linear weight -> "matrix" (Muon).
    Anything else (e.g. a raw 2-D or 3-D nn.Parameter) raises OptimGroupError instead of being
    dropped. Frozen parameters (requires_grad=False) are left out.
    Returns {group: [(name, param), ...]} in model.named_parameters() order.
    """
    owners = _optim_owner_types(model)
    groups: dict = {key: [] for key in OPTIM_GROUP_NAMES}
    for name, p in model.named_parameters():  # deduplicates shared tensors
        if p.requires_grad:
            groups[_optim_place(name, p, owners.get(id(p), set()), scalar_patterns)].append((name, p))
    return groups


def build_optimizers(model: nn.Module, *, matrix_lr: float, embed_lr: float, scalar_lr: float,
                     muon_momentum: float, muon_backend_steps: int, muon_weight_decay: float,
                     adam_weight_decay: float, beta1: float, beta2: float, adam_eps: float,
                     fused: bool = False, muon_ns: str = "quintic", muon_row_normalize: bool = False,
                     embed_beta2: float = 0.0, scalar_beta2: float = 0.0, scalar_weight_decay: float = 0.0) -> list:
    """[Muon(matrix params), AdamW(embed group, scalar group)], empty ones left out.

    Each param group records "base_lr" (what a schedule multiplies) and "group_name".
    adam_weight_decay applies to the embedding group, scalar_weight_decay (default 0: decaying gains
    changes the function) to the scalars; embed_beta2 / scalar_beta2 > 0 give a group its own beta2.
    fused=True asks for torch's fused AdamW (CUDA only).
    """
    groups = split_param_groups(model)
    optimizers = []
    if groups["matrix"]:
        muon = Muon([p for _, p in groups["matrix"]], lr=matrix_lr, momentum=muon_momentum,
                    backend_steps=muon_backend_steps, weight_decay=muon_weight_decay, ns=muon_ns,
                    row_normalize=muon_row_normalize)
        muon.param_groups[0].update(base_lr=matrix_lr, group_name="matrix")
        optimizers.append(muon)
    adam_groups = [
        dict(params=[p for _, p in groups[key]], lr=lr, base_lr=lr, weight_decay=wd, group_name=key,
             **({"betas": (beta1, b2)} if b2 > 0 else {}))
        for key, lr, wd, b2 in (("embed", embed_lr, adam_weight_decay, embed_beta2),
                                ("scalar", scalar_lr, scalar_weight_decay, scalar_beta2))
        if groups[key]
    ]
    if adam_groups:
        kwargs = dict(fused=True) if fused else {}
        optimizers.append(torch.optim.AdamW(adam_groups, betas=(beta1, beta2), eps=adam_eps,
                                            **kwargs))
    return optimizers


def training_progress(step: int, elapsed_ms: float, iterations: int, max_wallclock_ms) -> float:
    """Training done, in [0, 1]: the further of step / iterations and elapsed / clock cap."""
    p = step / iterations if iterations > 0 else 0.0
    if max_wallclock_ms is not None and max_wallclock_ms > 0:
        p = max(p, elapsed_ms / max_wallclock_ms)
    return min(p, 1.0)


def seq_len_at(progress: float, start: int, full: int, warmup_frac: float) -> int:
    """Context-length growth: start, doubling in equal stages, full from warmup_frac on (start 0 = off)."""
    if start <= 0 or start >= full or progress >= warmup_frac:
        return full
    stages = max(1, math.ceil(math.log2(full / start)))  # lengths start * 2^k below full
    k = int(progress / warmup_frac * stages)
    return min(start << k, full)


def lr_scale(step: int, elapsed_ms: float, *, warmup_steps: int, warmdown_steps: int,
             iterations: int, max_wallclock_ms, warmdown_frac: float = 0.0, min_lr: float = 0.0) -> float:
    """Learning-rate multiplier in [0, 1] for the step about to be taken (step counts from 0).

    Warmup: (step + 1) / warmup_steps for the first warmup_steps steps; then the smaller of that
    and `warmdown_scale`.
    """
    scale = 1.0
    if warmup_steps > 0 and step < warmup_steps:
        scale = (step + 1) / warmup_steps
    return min(scale, warmdown_scale(step, elapsed_ms, warmdown_steps=warmdown_steps, iterations=iterations,
                                     max_wallclock_ms=max_wallclock_ms, warmdown_frac=warmdown_frac, min_lr=min_lr))


def warmdown_scale(step: int, elapsed_ms: float, *, warmdown_steps: int, iterations: int,
                   max_wallclock_ms, warmdown_frac: float = 0.0, min_lr: float = 0.0) -> float:
    """The warmdown factor of the lr alone: 1.0 before the warmdown, then falling to 0.

    By steps: (iterations - step) / warmdown_steps over the last warmdown_steps steps.
    By time (max_wallclock_ms set and > 0), the challenge baseline's rule: with the mean step time
    elapsed_ms / step, warmdown_ms = warmdown_steps * step_ms and remaining_ms = max_wallclock_ms -
    elapsed_ms; the factor is remaining_ms / warmdown_ms once remaining_ms <= warmdown_ms. With
    both set, the smaller factor wins (whichever end comes first).
    warmdown_frac > 0 replaces both: linear to 0 over the last fraction of training_progress.
    min_lr > 0 floors the factor s: min_lr + (1 - min_lr) * s.
    """
    if warmdown_frac > 0:
        left = 1.0 - training_progress(step, elapsed_ms, iterations, max_wallclock_ms)
        return min_lr + (1.0 - min_lr) * min(left / warmdown_frac, 1.0)
    scale = 1.0
    if warmdown_steps > 0 and iterations > 0 and step >= iterations - warmdown_steps:
        scale = min(scale, max(iterations - step, 0) / warmdown_steps)
    if warmdown_steps > 0 and max_wallclock_ms is not None and max_wallclock_ms > 0:
        step_ms = elapsed_ms / max(step, 1)
        warmdown_ms = warmdown_steps * step_ms
        remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
        if remaining_ms <= warmdown_ms:
            scale = min(scale, remaining_ms / max(warmdown_ms, 1e-9))
    return min_lr + (1.0 - min_lr) * scale


def swa_snapshot_due(step: int, every: int, warmup_steps: int, warmdown: float) -> bool:
    """SWA takes a snapshot every `every` steps once the warmdown factor is below 0.5, never while
    the lr is still warming up (there a low lr scale means the start of training, not the end)."""
    return every > 0 and step >= warmup_steps and warmdown < 0.5 and step % every == 0


def muon_momentum_at(step: int, *, start: float, end: float, warmup_steps: int) -> float:
    """Muon momentum ramped linearly from start (step 0) to end (step >= warmup_steps)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1.0 - frac) * start + frac * end


def _optim_avg_targets(model: nn.Module) -> dict:
    """name -> tensor for the floating-point parameters and buffers that EMA/SWA average."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: t for name, t in named if t.is_floating_point()}


def _optim_avg_check_keys(kind: str, have: dict, got: dict) -> None:
    if set(have) != set(got):
        missing, extra = sorted(set(have) - set(got)), sorted(set(got) - set(have))
        raise ValueError(f"{kind}.load_state_dict: keys differ (missing {missing[:5]}, "
                         f"unexpected {extra[:5]})")
    for name, t in have.items():
        if tuple(got[name].shape) != tuple(t.shape):
            raise ValueError(f"{kind}.load_state_dict: {name} has shape {tuple(got[name].shape)}, "
                             f"expected {tuple(t.shape)}")


def _optim_avg_copy(model: nn.Module, values: dict) -> None:
    """Write fp32 averages into the model's own tensors (cast to their dtype)."""
    targets = _optim_avg_targets(model)
    with torch.no_grad():
        for name, t in targets.items():
            t.copy_(values[name])


class EMA:
    """Exponential moving average of the weights: shadow = decay * shadow + (1 - decay) * w.

    Shadows (fp32, plain tensors) cover floating-point parameters and buffers, starting from the
    model's current values. Non-float buffers are not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: t.detach().float().clone() for name, t in
                       _optim_avg_targets(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average."""
        for name, t in _optim_avg_targets(model).items():
            self.shadow[name].mul_(self.decay).add_(t.detach().float(), alpha=1.0 - self.decay)

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the average."""
        _optim_avg_copy(model, self.shadow)

    def state_dict(self) -> dict:
        """{name: fp32 tensor} (decay is configuration, not state)."""
        return {name: t.clone() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore shadows saved by state_dict(); names and shapes must match."""
        _optim_avg_check_keys("EMA", self.shadow, state)
        self.shadow = {name: state[name].detach().float().clone() for name in self.shadow}


class SWA:
    """Uniform average of weight snapshots taken with add(model) (e.g. every N warmdown steps).

    Keeps an fp32 running sum and a count; copy_to writes sum / count.
    """

    def __init__(self, model: nn.Module):
        self.count = 0
        self.sums = {name: torch.zeros(t.shape, dtype=torch.float32, device=t.device)
                     for name, t in _optim_avg_targets(model).items()}

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        """Take one snapshot of the model's current weights."""
        for name, t in _optim_avg_targets(model).items():
            self.sums[name].add_(t.detach().float())
        self.count += 1

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the mean of the snapshots."""
        if self.count == 0:
            raise ValueError("SWA.copy_to: no snapshot was added")
        _optim_avg_copy(model, {name: s / self.count for name, s in self.sums.items()})

    def state_dict(self) -> dict:
        """{"count": int64 scalar tensor, "sum/<name>": fp32 tensor, ...}."""
        state = {f"sum/{name}": t.clone() for name, t in self.sums.items()}
        state["count"] = torch.tensor(self.count, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() saved; names and shapes must match."""
        if "count" not in state:
            raise ValueError("SWA.load_state_dict: no 'count' entry")
        sums = {k[len("sum/"):]: v for k, v in state.items() if k.startswith("sum/")}
        if len(sums) + 1 != len(state):
            raise ValueError(f"SWA.load_state_dict: unexpected keys "
                             f"{sorted(k for k in state if k != 'count' and not k.startswith('sum/'))}")
        _optim_avg_check_keys("SWA", self.sums, sums)
        self.sums = {name: sums[name].detach().float().clone() for name in self.sums}
        self.count = int(state["count"])
