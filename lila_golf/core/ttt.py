"""Score-first LoRA test-time training (TTT): a scorer of the lila_golf/core/scoring.py protocol.

    scorer = TTTScorer(model, seq_len=1024, stride=64, lora_rank=8, lr=1e-3, epochs=2, chunk_tokens=4096)
    logp, _ = run_scorer(scorer, val_tokens, chunk_size=65536)   # log p(x_t | x_<t) for every target

The stream's targets are cut into TTT chunks on a fixed grid, targets [1 + k C, 1 + (k+1) C) with
C = chunk_tokens, whatever sizes the driver hands to score_chunk. For each TTT chunk, in order:
  1. score every target under torch.no_grad with the current adapted model, each in the sliding
     window that gives it the most context (scoring.sliding_plan, the same windows as ModelScorer);
  2. only then adapt: `epochs` Adam steps on the LoRA adapters, each on the mean next-token loss of
     that chunk's targets (windows of seq_len over the chunk and its preceding context, stride
     `train_stride`; one step per epoch, the gradient summed over all of the chunk's windows).
A target's score therefore depends only on the tokens before it and on adapters fitted to earlier
chunks: conditions C1-C4 of lila_golf/tools/audit.py hold by construction (tests/test_ttt.py runs the
audit). The base weights never change: the adapters live in forward hooks, outside the state dict,
start with B = 0 (the adapted model equals the base model) and are reset by begin().

Across ranks (torch.distributed initialised): each TTT chunk's windows are cut into contiguous
blocks, one per rank, for scoring (scores all-reduced so every rank returns the whole chunk) and
for the adaptation loss (adapter gradients all-reduced before each step), so every rank holds the
same adapters. Every rank must be handed the same stream.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .collectives import all_reduce_, rank_and_world
from .scoring import _scoring_run_plan, _scoring_tokens, sliding_plan

# Linear layers adapted by default: attention queries and values, and both MLP matrices of every block.
DEFAULT_LORA_TARGETS = ("attn.c_q", "attn.c_v", "mlp.fc", "mlp.proj")


def _ttt_lora_modules(model: nn.Module, targets) -> list:
    """(name, nn.Linear) of every Linear whose name is a target or ends with "." + target."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("LoRA needs at least one target layer name")
    hits = lambda n, t: n == t or n.endswith("." + t)
    for t in targets:
        if not any(hits(n, t) for n, _ in linears):
            names = ", ".join(n for n, _ in linears[:8]) + (", ..." if len(linears) > 8 else "")
            raise ValueError(f"LoRA target {t!r} matches no nn.Linear of the model (it has: {names or 'none'})")
    return [(n, m) for n, m in linears if any(hits(n, t) for t in targets)]


def _ttt_lora_hook(A: nn.Parameter, B: nn.Parameter, scale: float):
    """Forward hook adding scale * B (A x) to a Linear's output; A: (r, in), B: (out, r)."""
    def hook(module, inputs, output):
        delta = F.linear(F.linear(inputs[0].to(A.dtype), A), B)  # (..., in) -> (..., r) -> (..., out)
        return output + (scale * delta).to(output.dtype)
    return hook


def apply_lora(model: nn.Module, rank: int, targets=DEFAULT_LORA_TARGETS, *, scale: float = 1.0,
               generator: torch.Generator | None = None) -> list:
    """Attach rank-`rank` LoRA adapters to the nn.Linear layers of `model` named by `targets`.

    An adapted Linear computes W x + scale * B (A x) with A (rank, in) ~ N(0, 1/in) (drawn from
    `generator` on the CPU, so a fixed seed gives the same A on every rank) and B (out, rank) = 0, so
    the model's outputs are unchanged until B is trained. The adapters live in forward hooks: the
    base weights and the state dict are untouched. Returns [A_0, B_0, A_1, B_1, ...] (float32).
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if getattr(model, "_ttt_lora_hooks", None):
        raise ValueError("the model already has LoRA adapters; call remove_lora(model) first")
    params, hooks = [], []
    for _, linear in _ttt_lora_modules(model, targets):
        device = linear.weight.device
        a = torch.randn(rank, linear.in_features, generator=generator) / math.sqrt(linear.in_features)
        A = nn.Parameter(a.to(device))
        B = nn.Parameter(torch.zeros(linear.out_features, rank, device=device))
        hooks.append(linear.register_forward_hook(_ttt_lora_hook(A, B, scale)))
        params += [A, B]
    model._ttt_lora_hooks = hooks
    return params


def remove_lora(model: nn.Module) -> int:
    """Detach every adapter apply_lora attached; returns how many layers were adapted."""
    hooks = getattr(model, "_ttt_lora_hooks", None) or []
    for h in hooks:
        h.remove()
    model._ttt_lora_hooks = []
    return len(hooks)


def _ttt_my_windows(plan: list) -> list:
    """This rank's contiguous block of the plan's windows."""
    rank, world = rank_and_world()
    return plan[len(plan) * rank // world:len(plan) * (rank + 1) // world]


class TTTScorer:
    """Score-first LoRA test-time training scorer (module docstring); offers score_chunk and
    score_chunk_with_entropy, so MixtureScorer can wrap it like a ModelScorer.

    model: a causal LM, int64 (B, T) -> (B, T, vocab_size) logits, on `device` (default: where its
    parameters are). A TTTScorer owns the model's LoRA slots: begin() replaces any adapters on it,
    so use one TTTScorer per model at a time. lr = 0 or epochs = 0 scores exactly as ModelScorer.
    autocast: optional zero-argument context-manager factory wrapped around every forward.
    """

    def __init__(self, model: nn.Module, seq_len: int, stride: int, vocab_size: int | None = None, *,
                 device=None, lora_rank: int = 8, lr: float = 1e-3, epochs: int = 2, chunk_tokens: int = 4096,
                 targets=DEFAULT_LORA_TARGETS, train_stride: int | None = None, batch_size: int = 32,
                 seed: int = 0, autocast=None):
        train_stride = seq_len if train_stride is None else train_stride
        sliding_plan(1, 1, seq_len, stride)  # validates seq_len and both strides
        sliding_plan(1, 1, seq_len, train_stride)
        if chunk_tokens < 1 or epochs < 0 or lr < 0 or lora_rank < 1 or batch_size < 1:
            raise ValueError(f"TTTScorer needs chunk_tokens >= 1, epochs >= 0, lr >= 0, lora_rank >= 1, "
                             f"batch_size >= 1 (got {chunk_tokens}, {epochs}, {lr}, {lora_rank}, {batch_size})")
        self.model, self.seq_len, self.stride, self.train_stride = model, seq_len, stride, train_stride
        self.vocab_size = int(vocab_size if vocab_size is not None else model.cfg.vocab_size)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.lora_rank, self.lr, self.epochs, self.chunk_tokens = lora_rank, lr, epochs, chunk_tokens
        self.targets, self.batch_size, self.seed, self.autocast = targets, batch_size, seed, autocast
        _ttt_lora_modules(model, targets)  # fail early on a bad target name
        self.lora_params, self.adam_state, self.tokens, self.offset = None, None, None, 0
        self.adapt_steps = 0

    def begin(self, first_token: int) -> None:
        """Fresh adapters (same seed, B = 0) and optimiser; x_0 is context only."""
        first = _scoring_tokens([first_token], self.vocab_size, "TTTScorer.begin")
        remove_lora(self.model)
        gen = torch.Generator().manual_seed(self.seed)
        self.lora_params = apply_lora(self.model, self.lora_rank, self.targets, generator=gen)
        self.adam_state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.lora_params]
        self.tokens, self.offset, self.adapt_steps = torch.from_numpy(first).to(self.device), 0, 0

    def _ttt_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return self.model(x)
        with self.autocast():
            return self.model(x)

    def _ttt_chunk_start(self, t: int) -> int:
        """First target of the TTT chunk holding target t (chunks on the grid 1 + k C)."""
        return 1 + (t - 1) // self.chunk_tokens * self.chunk_tokens

    def score_chunk_with_entropy(self, chunk, probe=()):
        """(logp, dists, entropy in nats) for the chunk: each TTT chunk scored, then adapted on."""
        if self.tokens is None:
            raise RuntimeError("TTTScorer.score_chunk called before begin(first_token)")
        chunk = _scoring_tokens(chunk, self.vocab_size, "TTTScorer.score_chunk")
        a = self.offset + len(self.tokens)  # global index of chunk[0]
        b = a + len(chunk)
        self.tokens = torch.cat([self.tokens, torch.from_numpy(chunk).to(self.device)])
        probe = a + np.asarray(probe, dtype=np.int64).reshape(-1)
        logp, entropy = np.empty(len(chunk)), np.empty(len(chunk))
        dists = np.empty((len(probe), self.vocab_size))
        pos = a
        while pos < b:
            chunk_end = self._ttt_chunk_start(pos) + self.chunk_tokens
            end = min(b, chunk_end)
            sel = np.nonzero((probe >= pos) & (probe < end))[0]
            logp[pos - a:end - a], entropy[pos - a:end - a], dists[sel] = self._ttt_score(pos, end, probe[sel])
            if end == chunk_end:  # the whole TTT chunk is scored: only now may it train the adapters
                self._ttt_adapt(chunk_end - self.chunk_tokens, chunk_end)
            pos = end
        keep = max(0, self._ttt_chunk_start(b) - self.seq_len - self.offset)  # context of the open chunk
        self.tokens, self.offset = self.tokens[keep:], self.offset + keep
        return logp, dists, entropy

    def score_chunk(self, chunk, probe=()):
        """(logp (len(chunk),), dists (len(probe), V)), scored before the chunk adapts the model."""
        logp, dists, _ = self.score_chunk_with_entropy(chunk, probe)
        return logp, dists

    def _ttt_score(self, p0: int, p1: int, probe: np.ndarray):
        """Score targets [p0, p1) with the current adapters; this rank's windows, then all-reduced."""
        mine = _ttt_my_windows(sliding_plan(p0, p1, self.seq_len, self.stride))
        j0, j1 = (mine[0][1], mine[-1][2]) if mine else (p0, p0)
        own = np.nonzero((probe >= j0) & (probe < j1))[0]
        logp, entropy, d = _scoring_run_plan(self._ttt_logits, self.tokens, self.offset, mine, self.batch_size,
                                             self.vocab_size, probe[own], True)
        if rank_and_world()[1] == 1:
            return logp.cpu().numpy(), entropy.cpu().numpy(), d.cpu().numpy()
        n, V = p1 - p0, self.vocab_size  # each rank fills its own targets, zeros elsewhere, then sum
        flat = torch.zeros(2 * n + len(probe) * V, dtype=torch.float64, device=self.device)
        flat[j0 - p0:j1 - p0], flat[n + j0 - p0:n + j1 - p0] = logp, entropy
        flat[2 * n:].view(len(probe), V)[torch.from_numpy(own).to(self.device)] = d
        all_reduce_(flat)
        flat = flat.cpu().numpy()
        return flat[:n], flat[n:2 * n], flat[2 * n:].reshape(len(probe), V)

    def _ttt_window_batches(self, plan: list):
        """(x (B, L) inputs, rows, cols, y) per batch of equal-length windows; (rows, cols) pick the
        positions of the windows' scored targets y."""
        by_len = {}
        for s, j0, j1 in plan:
            by_len.setdefault(j1 - 1 - s, []).append((s, j0, j1))
        for length, group in by_len.items():
            for i in range(0, len(group), self.batch_size):
                part = group[i:i + self.batch_size]
                x = torch.stack([self.tokens[s - self.offset:s - self.offset + length] for s, _, _ in part])
                rows = torch.cat([torch.full((j1 - j0,), r) for r, (s, j0, j1) in enumerate(part)])
                cols = torch.cat([torch.arange(j0 - 1 - s, j1 - 1 - s) for s, j0, j1 in part])
                y = torch.cat([self.tokens[j0 - self.offset:j1 - self.offset] for s, j0, j1 in part])
                yield x, rows.to(self.device), cols.to(self.device), y

    def _ttt_adapt(self, c0: int, c1: int) -> None:
        """`epochs` Adam steps on the mean next-token loss of targets [c0, c1) (already scored)."""
        mine = _ttt_my_windows(sliding_plan(c0, c1, self.seq_len, self.train_stride))
        world = rank_and_world()[1]
        for _ in range(self.epochs):
            grads = [torch.zeros_like(p) for p in self.lora_params]
            for x, rows, cols, y in self._ttt_window_batches(mine):
                with torch.enable_grad():
                    logits = self._ttt_logits(x)[rows, cols].float()  # (M, V) at the scored targets
                    nll = F.cross_entropy(logits, y, reduction="sum")
                    step = torch.autograd.grad(nll, self.lora_params, allow_unused=True)  # adapters only
                for g, s in zip(grads, step):
                    if s is not None:
                        g += s
            flat = torch.cat([g.reshape(-1) for g in grads])
            all_reduce_(flat)
            flat /= c1 - c0  # mean over the chunk's targets, all ranks together
            self.adapt_steps += 1
            grads = [g.view_as(p) for p, g in zip(self.lora_params, flat.split([p.numel() for p in self.lora_params]))]
            _ttt_adam_step(self.lora_params, grads, self.adam_state, self.lr, self.adapt_steps)


@torch.no_grad()
def _ttt_adam_step(params, grads, state, lr: float, step: int, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """One Adam step (Kingma & Ba 2015, bias-corrected), in place; state: [(m, v)] per parameter.
    Hand-written because torch.optim imports torch._dynamo on first use (seconds on a small CPU)."""
    b1, b2 = betas
    for p, g, (m, v) in zip(params, grads, state):
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** step)).sqrt_().add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))
