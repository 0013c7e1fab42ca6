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
import contextlib
import copy
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


# --------------------------------------------------------------------------- per-document TTT
# The final evaluation's TTT (TTT_MODE=doc|phased): every document gets its own LoRA adapters, fresh
# at its first token, so a document's scores depend only on its own tokens and the (phase's) base
# weights, whichever rank scores it and whichever documents share its batch.

def document_spans(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """(D, 2) int64 [start, end] of each document: it starts at a BOS (or at token 0) and its targets
    are start + 1 .. end inclusive, the last one being the next document's BOS (or the final token)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < 2:
        raise ValueError(f"document_spans needs a 1-D stream of >= 2 tokens, got shape {tokens.shape}")
    starts = np.flatnonzero(tokens[:-1] == bos_id)  # a BOS at the very end starts no scored document
    if not starts.size or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    return np.stack([starts, np.append(starts[1:], len(tokens) - 1)], 1).astype(np.int64)


def ttt_chunk_window(c: int, n_targets: int, chunk: int, seq_len: int) -> tuple[int, int, int]:
    """TTT chunk c of a document with n_targets targets: (s, j0, j1), inputs u[s : j1 - 1] scoring local
    targets j0 .. j1 - 1. The window start comes from the chunk's grid end (c + 1) * chunk, so a
    chunk cut short by the document's end (or seen in pieces by a streaming scorer) keeps it."""
    j0, j1 = c * chunk + 1, min((c + 1) * chunk, n_targets) + 1
    return max(0, (c + 1) * chunk - seq_len), j0, j1


def ttt_balanced_docs(spans: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Indices of this rank's documents: longest first, each to the least-loaded rank (by targets)."""
    lengths = spans[:, 1] - spans[:, 0]
    order = np.argsort(-lengths, kind="stable")
    load, mine = np.zeros(world), []
    for d in order:
        r = int(np.argmin(load))
        load[r] += lengths[d]
        if r == rank:
            mine.append(int(d))
    return np.asarray(mine, dtype=np.int64)


class DocTTT:
    """Score-first per-document LoRA TTT, batched over documents (TTT_MODE=doc), with optional global
    phases (TTT_MODE=phased).

    Each document's targets are cut into chunks of `chunk` tokens (`ttt_chunk_window`). A step runs
    one chunk of each of up to `batch_docs` documents in one forward pass, every row with its own
    adapters (A_d x then B_d, batched matmuls): the chunk's log-probabilities are recorded first, and
    only then one Adam step on that chunk's mean loss moves that document's adapters (documents whose
    chunk was their last take no step). Adapters start as A = a seeded draw shared by all documents,
    B = 0 (the base model), so a document's scores do not depend on its batch, rank or neighbours.

    Phased (`phase_sgd`): after the documents of a phase are all scored, one pass of plain SGD on the
    base weights over those documents (windows of seq_len inside each document, `phase_batch` windows
    a step, gradients summed over ranks), before the next phase is scored.
    """

    def __init__(self, model: nn.Module, seq_len: int, *, chunk: int = 64, lora_rank: int = 8, lr: float = 1e-3,
                 targets=DEFAULT_LORA_TARGETS, batch_docs: int = 16, seed: int = 0, autocast=None,
                 phase_lr: float = 1e-3, phase_batch: int = 16):
        if min(seq_len, chunk, lora_rank, batch_docs, phase_batch) < 1 or chunk > seq_len or lr < 0 or phase_lr < 0:
            raise ValueError(f"DocTTT needs 1 <= chunk <= seq_len, lora_rank, batch_docs, phase_batch >= 1, lr >= 0 "
                             f"(got chunk={chunk}, seq_len={seq_len}, rank={lora_rank}, batch={batch_docs}, lr={lr})")
        self.model, self.seq_len, self.chunk, self.lr, self.autocast = model, seq_len, chunk, lr, autocast
        self.batch_docs, self.phase_lr, self.phase_batch = batch_docs, phase_lr, phase_batch
        self.layers = [m for _, m in _ttt_lora_modules(model, targets)]
        self.device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        self.a_init = [(torch.randn(lora_rank, m.in_features, generator=gen) / math.sqrt(m.in_features)).to(self.device)
                       for m in self.layers]
        self.current = None  # [(A (b, r, in), B (b, out, r))] per layer for the rows of the running batch

    # --- adapters in forward hooks ---
    def _doc_hook(self, i: int):
        def hook(module, inputs, output):
            if self.current is None:
                return output
            A, B = self.current[i]
            delta = torch.matmul(torch.matmul(inputs[0].to(A.dtype), A.transpose(1, 2)), B.transpose(1, 2))
            return output + delta.to(output.dtype)  # (b, T, in) -> (b, T, r) -> (b, T, out)
        return hook

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return self.model(x)
        with self.autocast():
            return self.model(x)

    @contextlib.contextmanager
    def adapting(self):
        """Adapter hooks on and base weights without gradients (only the adapters learn); undone on exit."""
        hooks = [m.register_forward_hook(self._doc_hook(i)) for i, m in enumerate(self.layers)]
        frozen = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            self.current = None
            for h in hooks:
                h.remove()
            for p, f in zip(self.model.parameters(), frozen):
                p.requires_grad_(f)

    def score_documents(self, tokens: torch.Tensor, spans: np.ndarray, logp: np.ndarray, entropy: np.ndarray,
                        progress=None) -> None:
        """Score every target of `spans` (rows [start, end]) into logp / entropy at index t - 1, adapting
        per document. tokens: the whole stream (1-D, on the model's device)."""
        with self.adapting():
            self._doc_slots(tokens, spans, logp, entropy, progress)

    def _doc_slots(self, tokens, spans, logp, entropy, progress) -> None:
        order = np.argsort(-(spans[:, 1] - spans[:, 0]), kind="stable")  # long documents first
        queue = [tuple(int(v) for v in spans[d]) for d in order]
        slots = [None] * min(self.batch_docs, len(queue))  # (start, n_targets, next chunk) per slot
        S = len(slots)
        A = [a.expand(S, -1, -1).clone() for a in self.a_init]
        B = [torch.zeros(S, m.out_features, a.shape[0], device=self.device) for m, a in zip(self.layers, self.a_init)]
        adam = [(torch.zeros_like(p), torch.zeros_like(p)) for p in A + B]
        steps = torch.zeros(S, device=self.device)
        while queue or any(s is not None for s in slots):
            for i in range(S):
                if slots[i] is None and queue:
                    start, end = queue.pop(0)
                    slots[i] = [start, end - start, 0]
                    self._reset_slot(i, A, B, adam, steps)
            rows = [i for i in range(S) if slots[i] is not None]
            done = self._doc_step(tokens, [slots[i] for i in rows], rows, A, B, adam, steps, logp, entropy)
            for i in rows:
                slots[i][2] += 1
                if slots[i][2] * self.chunk >= slots[i][1]:
                    slots[i] = None
            if progress is not None:
                progress(done)

    def _reset_slot(self, i: int, A, B, adam, steps) -> None:
        for a, a0 in zip(A, self.a_init):
            a[i] = a0
        for b in B:
            b[i] = 0
        for m, v in adam:
            m[i], v[i] = 0, 0
        steps[i] = 0

    def _doc_step(self, tokens, docs, rows, A, B, adam, steps, logp, entropy, base: int = 0, dists=None) -> int:
        """One chunk of each document in `docs` ((start, n_targets, chunk index) each): score, record
        (target t at logp[t - 1 - base]; full distributions of the targets named in `dists`), then one
        Adam step where a later chunk exists. Returns the number of targets scored."""
        wins = [(start,) + ttt_chunk_window(c, n, self.chunk, self.seq_len) for start, n, c in docs]
        width = max(j1 - 1 - s for _, s, _, j1 in wins)
        x = torch.zeros(len(docs), width, dtype=torch.long, device=self.device)  # right padding: causal
        for r, (start, s, _, j1) in enumerate(wins):
            x[r, :j1 - 1 - s] = tokens[start + s:start + j1 - 1]
        # every scored target of the batch: its row, its column in the window, its stream position
        row = np.concatenate([np.full(j1 - j0, r) for r, (_, _, j0, j1) in enumerate(wins)])
        col = np.concatenate([np.arange(j0 - 1 - s, j1 - 1 - s) for _, s, j0, j1 in wins])
        pos = np.concatenate([np.arange(start + j0, start + j1) for start, _, j0, j1 in wins])
        train = np.array([self.lr > 0 and c + 1 < -(-n // self.chunk) for _, n, c in docs])
        idx = torch.as_tensor(rows, device=self.device)
        params = [p[idx].requires_grad_(bool(train.any())) for p in A + B]
        self.current = list(zip(params[:len(A)], params[len(A):]))
        with torch.enable_grad():
            logits = self._forward(x)[torch.from_numpy(row).to(self.device), torch.from_numpy(col).to(self.device)]
            logits = logits.float()  # (M, V) at the batch's scored targets
            y = tokens[torch.from_numpy(pos).to(self.device)]
            self._doc_record(logits.detach(), y, pos, base, logp, entropy, dists)
            if train.any():  # the scores above are fixed: only now may each chunk move its adapters
                nll = F.cross_entropy(logits, y, reduction="none")
                weight = torch.from_numpy(train[row] / np.bincount(row)[row]).to(nll)  # mean per document
                grads = torch.autograd.grad((nll * weight).sum(), params)
        self.current = None
        if train.any():
            self._doc_adam(params, grads, adam, steps, idx, torch.from_numpy(train).to(self.device))
            for p, q in zip(A + B, params):
                p[idx] = q.detach()
        return len(pos)

    @staticmethod
    def _doc_record(logits, y, pos, base: int, logp, entropy, dists) -> None:
        """log p and entropy (nats) of each scored target into the arrays (index t - 1 - base; entries
        before the arrays' start were recorded by an earlier call), full distributions into `dists`."""
        lsm = logits.double().log_softmax(-1)
        both = torch.stack([lsm.gather(1, y[:, None])[:, 0], -(lsm.exp() * lsm).sum(-1)]).cpu().numpy()
        keep = pos - 1 - base >= 0
        logp[pos[keep] - 1 - base], entropy[pos[keep] - 1 - base] = both[0, keep], both[1, keep]
        for t in (dists.keys() & set(pos.tolist())) if dists is not None else ():
            dists[t] = lsm[int(np.flatnonzero(pos == t)[0])].exp().cpu().numpy()

    @torch.no_grad()
    def _doc_adam(self, params, grads, adam, steps, idx, train, b1=0.9, b2=0.999, eps=1e-8) -> None:
        """Adam per document (its own moments and step count); rows without a later chunk stay put."""
        steps[idx] += train.float()
        t = steps[idx].clamp_min(1)
        for p, g, (m_all, v_all) in zip(params, grads, adam):
            mask = train.view(-1, *([1] * (p.ndim - 1))).to(p.dtype)
            m = m_all[idx] * b1 + (1 - b1) * g
            v = v_all[idx] * b2 + (1 - b2) * g * g
            m_all[idx] = torch.where(mask > 0, m, m_all[idx])
            v_all[idx] = torch.where(mask > 0, v, v_all[idx])
            shape = (-1,) + (1,) * (p.ndim - 1)
            update = (m / (1 - b1 ** t).view(shape)) / ((v / (1 - b2 ** t).view(shape)).sqrt() + eps)
            p.sub_(self.lr * mask * update)

    # --- phased: global SGD on documents already scored ---
    def phase_sgd(self, tokens: torch.Tensor, spans: np.ndarray) -> int:
        """One SGD pass on the base weights over the documents `spans` (all already scored), in stream
        order, `phase_batch` windows a step; each rank takes a contiguous share of each step's windows
        and the gradients are summed over ranks. Returns the number of steps."""
        wins = [(int(a) + w, min(int(a) + w + self.seq_len, int(b))) for a, b in spans
                for w in range(0, int(b) - int(a), self.seq_len)]  # inputs [i0, i1) predict [i0 + 1, i1]
        rank, world = rank_and_world()
        params = [p for p in self.model.parameters() if p.requires_grad]
        steps = 0
        for k in range(0, len(wins), self.phase_batch):
            batch = wins[k:k + self.phase_batch]
            mine = batch[len(batch) * rank // world:len(batch) * (rank + 1) // world]
            grads = [torch.zeros_like(p) for p in params]
            by_len = {}
            for i0, i1 in mine:
                by_len.setdefault(i1 - i0, []).append(i0)
            for length, starts in by_len.items():  # windows of equal length in one forward
                x = torch.stack([tokens[i0:i0 + length] for i0 in starts])
                y = torch.stack([tokens[i0 + 1:i0 + length + 1] for i0 in starts])
                with torch.enable_grad():
                    logits = self._forward(x).float()
                    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
                    for g, s in zip(grads, torch.autograd.grad(nll, params, allow_unused=True)):
                        if s is not None:
                            g += s
            flat = torch.cat([g.reshape(-1) for g in grads])
            all_reduce_(flat)
            n_targets = sum(i1 - i0 for i0, i1 in batch)
            with torch.no_grad():
                for p, g in zip(params, flat.split([p.numel() for p in params])):
                    p.sub_(self.phase_lr * g.view_as(p) / n_targets)
            steps += 1
        return steps


class DocTTTScorer:
    """The per-document (and phased) TTT as a streaming scorer (lila_golf/core/scoring.py protocol), for
    the audit and for checking the batched `DocTTT` the final evaluation runs: same chunk windows,
    same steps, one document at a time. A document ends at a target equal to `bos_id`; the phases end
    after documents `phase_ends` (a fixed list of document counts, e.g. (20, 40, 60)).
    The scorer works on its own copy of the model (the phases change the base weights); begin()
    restores that copy's weights."""

    def __init__(self, model: nn.Module, seq_len: int, bos_id: int, vocab_size: int | None = None, *,
                 phase_ends=(), **doc_ttt):
        vocab_size = vocab_size if vocab_size is not None else model.cfg.vocab_size
        model = copy.deepcopy(model)
        self.engine = DocTTT(model, seq_len, **{**doc_ttt, "batch_docs": 1})
        self.model, self.bos_id, self.phase_ends = model, int(bos_id), tuple(int(d) for d in phase_ends)
        self.vocab_size = int(vocab_size)
        self.base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.tokens = None

    def begin(self, first_token: int) -> None:
        first = _scoring_tokens([first_token], self.vocab_size, "DocTTTScorer.begin")
        self.model.load_state_dict(self.base_state)
        self.tokens = torch.from_numpy(first).to(self.engine.device)
        self.doc_start, self.docs_done, self.phase_docs = 0, 0, []
        self._new_adapters()

    def _new_adapters(self) -> None:
        e = self.engine
        self.A = [a[None].clone() for a in e.a_init]
        self.B = [torch.zeros(1, m.out_features, a.shape[0], device=e.device) for m, a in zip(e.layers, e.a_init)]
        self.adam = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.A + self.B]
        self.steps = torch.zeros(1, device=e.device)

    def _run(self, n_targets: int, c: int, base: int, logp, entropy, dists=None) -> None:
        """engine step on the current document, chunk c, with its first n_targets targets known."""
        with self.engine.adapting():
            self.engine._doc_step(self.tokens, [(self.doc_start, n_targets, c)], [0], self.A, self.B, self.adam,
                                  self.steps, logp, entropy, base, dists)

    def score_chunk_with_entropy(self, chunk, probe=()):
        """(logp, dists, entropy) of the chunk: pieces inside one TTT chunk of one document are scored
        with that document's adapters; a finished TTT chunk then adapts them; a BOS target ends it."""
        if self.tokens is None:
            raise RuntimeError("DocTTTScorer.score_chunk called before begin(first_token)")
        chunk = _scoring_tokens(chunk, self.vocab_size, "DocTTTScorer.score_chunk")
        a = len(self.tokens)  # global index of chunk[0]
        self.tokens = torch.cat([self.tokens, torch.from_numpy(chunk).to(self.engine.device)])
        logp, entropy = np.empty(len(chunk)), np.empty(len(chunk))
        want = {a + int(p): None for p in np.asarray(probe, dtype=np.int64).reshape(-1)}
        C, t = self.engine.chunk, a
        while t < a + len(chunk):
            j = t - self.doc_start  # local index of target t in its document
            c = (j - 1) // C
            stop = min(a + len(chunk), self.doc_start + (c + 1) * C + 1)
            bos = np.flatnonzero(chunk[t - a:stop - a] == self.bos_id)
            end = t + int(bos[0]) + 1 if bos.size else stop  # targets [t, end) of this piece
            self._run(end - 1 - self.doc_start, c, a - 1, logp, entropy, want)
            if bos.size:
                self._end_document(end - 1)
            elif end - 1 - self.doc_start == (c + 1) * C:  # the TTT chunk is complete and scored
                scratch = np.empty(end - a)
                self._run((c + 2) * C, c, a - 1, scratch, scratch.copy())  # its Adam step (scores ignored)
            t = end
        dists = np.stack([want[a + int(p)] for p in np.asarray(probe, dtype=np.int64).reshape(-1)]) \
            if len(want) else np.empty((0, self.vocab_size))
        return logp, dists, entropy

    def _end_document(self, last: int) -> None:
        """The target at `last` (a BOS) closed the document: new adapters; a phase may end here."""
        self.phase_docs.append((self.doc_start, last))
        self.docs_done += 1
        self.doc_start = last
        self._new_adapters()
        if self.docs_done in self.phase_ends:
            self.engine.phase_sgd(self.tokens, np.asarray(self.phase_docs, dtype=np.int64))
            self.phase_docs = []

    def score_chunk(self, chunk, probe=()):
        logp, dists, _ = self.score_chunk_with_entropy(chunk, probe)
        return logp, dists
