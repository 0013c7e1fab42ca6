"""GPT for parameter golf: tied embeddings, RMSNorm, logit softcap, orthogonal init, and each record
technique behind its own switch (GQA, partial RoPE, LeakyReLU(0.5)^2, U-Net skips, SmearGate,
BigramHash, XSA, value residual, value embeddings, depth recurrence, LN scale) and the 1.06-class
switches of issue 17 (sparse attention output gate, gated U-Net skips, SmearGate masked at BOS,
document-isolated attention, two parallel residual lanes, a loop of layers switched on during
training, separate softcaps for negative logits).

Shapes: B batch, T time, D model_dim, H query heads, K kv heads, hd head_dim, V vocab.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig, layer_list
from .geometry import E8Adapter, E8AttentionBias, E8SideBranch, LeechFrozenQK, LeechMetric
from .lattice import leech_resonance_loss
from .docattn import doc_attention, doc_layout


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def scaled_rms_norm(x: torch.Tensor, gain: float) -> torch.Tensor:
    """rms_norm(x) * gain (LN scale); gain 1.0 skips the multiply, a full pass over x each way."""
    return rms_norm(x) if gain == 1.0 else rms_norm(x) * gain


class Rotary(nn.Module):
    """RoPE on the first `dims` dims of each head (partial RoPE); the rest pass through."""

    def __init__(self, head_dim: int, dims: int, base: float):
        super().__init__()
        self.dims = dims or head_dim
        self.partial = self.dims < head_dim
        inv_freq = 1.0 / base ** (torch.arange(0, self.dims, 2, dtype=torch.float32) / self.dims)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cos_sin = None  # (T, device, cos, sin): every layer and step reuses one table

    def cos_sin(self, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T, 1, dims/2) tables. Cached in eager mode only: torch.compile folds them into its graph,
        and tensors made under inference_mode cannot enter autograd later."""
        eager = not torch.compiler.is_compiling()
        cached = self._cos_sin
        if eager and cached is not None and cached[0] == T and cached[1] == device:
            return cached[2], cached[3]
        t = torch.arange(T, device=device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, dims/2)
        cos, sin = freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]
        if eager and not torch.is_inference_mode_enabled():
            self._cos_sin = (T, device, cos, sin)
        return cos, sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, heads, hd)
        cos, sin = self.cos_sin(x.size(1), x.device)
        rot = x[..., : self.dims] if self.partial else x
        x1, x2 = rot.float().chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).type_as(x)
        return torch.cat((rotated, x[..., self.dims:]), dim=-1) if self.partial else rotated


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        # lattice geometry (lila_golf/core/geometry.py); all None for attn_geometry "none"
        self.leech_frozen = LeechFrozenQK() if cfg.attn_geometry == "leech_frozen" else None
        self.leech_metric = LeechMetric() if cfg.attn_geometry == "leech_metric" else None
        self.e8_bias = E8AttentionBias(cfg.num_heads, self.head_dim, cfg.e8_temperature) if cfg.attn_geometry == "e8" else None
        if self.leech_frozen is None:
            self.c_q = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
            self.c_k = nn.Linear(cfg.model_dim, kv_dim, bias=False)  # GQA: K/V are kv_heads/heads of Q
        self.c_v = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(self.head_dim, cfg.rope_dims, cfg.rope_base)
        self.use_xsa = layer >= cfg.num_layers - cfg.xsa_last_n
        self.use_value_residual = cfg.value_residual and layer > 0
        if self.use_value_residual:
            self.v_mix = nn.Parameter(torch.tensor(0.5))  # weight of this layer's own values
        self.use_qk_norm = True  # runtime switch (tests)
        self.gate_width, self.gate_scale = cfg.attn_gate_width, cfg.attn_gate_scale
        if self.gate_width:  # sparse output gate (PR #1787): zero init = every head at sigmoid(0) = 0.5
            self.attn_gate = nn.Parameter(torch.zeros(cfg.num_heads, self.gate_width))
            self.attn_gate._optim_group = "scalar"

    def forward(self, x, v_first=None, value_embed=None, docs=None):
        """x: (B, T, D); v_first: (B, T, K, hd) from layer 0; value_embed: (B, T, K*hd) or None;
        docs: a `doc_layout` (attention within documents) or None."""
        B, T, _ = x.shape
        if self.leech_frozen is not None:
            q, k = self.leech_frozen(x, self.num_heads, self.num_kv_heads)
        else:
            q = self.c_q(x).view(B, T, self.num_heads, self.head_dim)
            k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.c_v(x)
        if value_embed is not None:
            v = v + value_embed
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        if self.use_value_residual and v_first is not None:
            v = self.v_mix * v + (1 - self.v_mix) * v_first
        if self.use_qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        # E8 bias channels from the pre-RoPE q, k; the Leech metric before RoPE keeps scores relative
        e8_extra = self.e8_bias.features(q, k) if self.e8_bias is not None else None
        if self.leech_metric is not None:
            q = self.leech_metric(q)
        q, k = self.rotary(q), self.rotary(k)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        scale = None
        if e8_extra is not None:  # logits + E8 bias = [q, q_extra].[k, k_extra] / sqrt(hd)
            q, k = torch.cat((q, e8_extra[0].to(q.dtype)), -1), torch.cat((k, e8_extra[1].to(k.dtype)), -1)
            scale = 1.0 / math.sqrt(self.head_dim)
        if docs is not None:
            y = doc_attention(q, k, v, docs, scale)
        else:
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale,
                enable_gqa=self.num_kv_heads != self.num_heads,
            ).transpose(1, 2)  # (B, T, H, hd)
        if self.use_xsa:
            y = exclusive_self_attention(y, v)
        if self.gate_width:  # gate (B, T, H) from the token's own first channels only: causal
            gate = torch.sigmoid(self.gate_scale * F.linear(x[..., :self.gate_width], self.attn_gate.to(x.dtype)))
            y = y * gate[..., None]
        return self.proj(y.reshape(B, T, -1)), v


def exclusive_self_attention(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA (arXiv 2603.09078): remove from each head's output its component along the token's own
    normalised value. y: (B, T, H, hd); v: (B, T, K, hd), each kv head shared by H/K query heads."""
    group = y.size(2) // v.size(2)
    v_hat = F.normalize(v, dim=-1).repeat_interleave(group, dim=2)  # (B, T, H, hd)
    return y - (y * v_hat).sum(-1, keepdim=True) * v_hat


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_mult * cfg.model_dim, bias=False)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.model_dim, cfg.model_dim, bias=False)
        self.proj._zero_init = True
        self.leaky = cfg.activation == "leaky_relu2"

    def forward(self, x):
        h = self.fc(x)
        h = F.leaky_relu(h, 0.5) if self.leaky else F.relu(h)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, layer)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        # resid_mix: each block re-reads the embedding x0 (challenge baseline)
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))
        self.e8_side = E8SideBranch(cfg.model_dim, cfg.e8_sidebranch, cfg.e8_temperature) if cfg.e8_sidebranch != "off" else None
        self.e8_adapter = E8Adapter(cfg.model_dim, cfg.e8_temperature) if cfg.e8_adapter else None
        self.use_x0 = True  # runtime switch (tests): the x0 lane (resid_mix)
        if cfg.parallel_start and layer >= cfg.parallel_start:
            # lane_lambdas[s, l]: weight of sublayer s (0 attention, 1 MLP) written into lane l
            self.lane_lambdas = nn.Parameter(torch.ones(2, 2))
            self.lane_lambdas._optim_group = "scalar"

    def mix_x0(self, x, x0):
        return self.resid_mix[0] * x + self.resid_mix[1] * x0 if self.use_x0 else x

    def forward(self, x, x0, ln_gain: float, v_first=None, value_embed=None, docs=None):
        x = self.mix_x0(x, x0)
        attn_out, v = self.attn(scaled_rms_norm(x, ln_gain), v_first, value_embed, docs)
        x = x + self.attn_scale * attn_out
        x = x + self.mlp_scale * self.mlp(scaled_rms_norm(x, ln_gain))
        if self.e8_side is not None:
            x = x + self.e8_side(rms_norm(x))
        if self.e8_adapter is not None:
            x = x + self.e8_adapter(rms_norm(x))
        return x, v

    def forward_lanes(self, lanes, x0, ln_gain: float, v_first=None, value_embed=None, docs=None):
        """Parallel lanes (PR #1530): attention reads lane 0, the MLP lane 1, each writes both with
        learned weights (all 1: the lanes stay equal, as forward())."""
        w = self.lane_lambdas.to(lanes[0].dtype)
        l0, l1 = self.mix_x0(lanes[0], x0), self.mix_x0(lanes[1], x0)
        attn_out, v = self.attn(rms_norm(l0) * ln_gain, v_first, value_embed, docs)
        a = self.attn_scale * attn_out
        l0, l1 = l0 + w[0, 0] * a, l1 + w[0, 1] * a
        m = self.mlp_scale * self.mlp(rms_norm(l1) * ln_gain)
        return (l0 + w[1, 0] * m, l1 + w[1, 1] * m), v


class SmearGate(nn.Module):
    """Mix each position's embedding with the previous position's, per dimension (causal)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.full((dim,), -2.0))

    def forward(self, x, not_bos=None):
        """not_bos: (B, T) bool or None: a BOS keeps its own embedding (PR #1855's leak fix)."""
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, D), zeros before the first token
        g = torch.sigmoid(self.gate)
        if not_bos is not None:
            g = g * not_bos[..., None].to(g.dtype)  # (B, T, D)
        return (1 - g) * x + g * prev


class BigramHash(nn.Module):
    """An embedding of hash(previous token, token) added to the input (buckets-1 is 'no previous')."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        self.proj._zero_init = True

    def forward(self, idx, bos=None):
        """bos: (B, T) bool or None: a BOS then hashes as 'no previous'."""
        prev = F.pad(idx[:, :-1], (1, 0), value=-1)
        if bos is not None:
            prev = prev.masked_fill(bos, -1)
        h = (prev * 1000003 + idx * 97) % (self.buckets - 1)
        h = torch.where(prev < 0, torch.full_like(h, self.buckets - 1), h)
        return self.proj(self.embed(h))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, weight_init: str = "orthogonal"):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.schedule = layer_schedule(cfg.num_layers, layer_list(cfg.recur_layers))
        self.num_skips = cfg.num_layers // 2
        if cfg.num_loops:  # built looping; the trainer switches the loop off until LOOP_ENABLE_AT
            self.schedule = loop_schedule(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops)
            self.num_skips = len(self.schedule) // 2
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        if cfg.skip_gates:  # zero init: sigmoid 0.5, an even mix of the stream and the weighted skip
            self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, cfg.model_dim))
            self.skip_gates._optim_group = "scalar"
        self.smear = SmearGate(cfg.model_dim) if cfg.smear_gate else None
        self.bigram = BigramHash(cfg.bigram_hash_buckets, cfg.bigram_dim, cfg.model_dim) if cfg.bigram_hash_buckets else None
        self.ve_layers = layer_list(cfg.value_embed_layers)
        if self.ve_layers:
            kv_dim = cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads)
            self.value_embed = nn.Embedding(cfg.vocab_size, kv_dim)
            self.ve_scale = nn.Parameter(torch.full((len(self.ve_layers),), 0.5))
        # runtime switches (tests flip them on one instance to show each one matters)
        self.use_unet, self.use_ln_scale = cfg.unet_skips, cfg.ln_scale
        self._init_weights(cfg, weight_init)

    def _init_weights(self, cfg: GPTConfig, weight_init: str):
        """weight_init "orthogonal" (ours) or "linear_default": nn.Linear's own kaiming-uniform init,
        as the challenge baseline leaves it (its weights are then ~0.58x the orthogonal ones)."""
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if getattr(module, "_zero_init", False):
                    nn.init.zeros_(module.weight)
                elif weight_init == "orthogonal":
                    nn.init.orthogonal_(module.weight)
        if self.ve_layers:
            nn.init.normal_(self.value_embed.weight, std=cfg.tied_embed_init_std)

    def forward(self, idx: torch.Tensor, targets=None, weights=None) -> torch.Tensor:
        """idx: (B, T) int64 -> logits (B, T, V), softcapped; with targets, the training loss
        (so DDP and torch.compile wrap the whole objective)."""
        if targets is not None:
            return self.loss(idx, targets, weights)
        return self.head(self.hidden(idx))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden state (B, T, D) -> softcapped logits through the tied embedding."""
        logits = F.linear(rms_norm(x), self.tok_emb.weight)
        cap, neg = self.cfg.logit_softcap, self.cfg.logit_softcap_neg
        if neg > 0:
            return torch.where(logits > 0, cap * torch.tanh(logits / cap), neg * torch.tanh(logits / neg))
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    def set_looping(self, on: bool) -> None:
        """NUM_LOOPS on or off (a compiled model recompiles)."""
        cfg = self.cfg
        if not cfg.num_loops:
            return
        full = loop_schedule(cfg.num_layers, cfg.loop_start, cfg.loop_end, cfg.num_loops)
        self.schedule = full if on else list(range(cfg.num_layers))

    def embed(self, idx: torch.Tensor) -> tuple:
        """idx (B, T) -> (x0 (B, T, D), document layout or None)."""
        cfg = self.cfg
        bos = idx == cfg.bos_id if cfg.smear_bos_mask or cfg.doc_isolation else None
        x = self.tok_emb(idx)
        if self.bigram is not None:
            x = x + self.bigram(idx, bos if cfg.doc_isolation else None)
        if self.smear is not None:
            x = self.smear(x, ~bos if cfg.smear_bos_mask else None)
        return rms_norm(x), doc_layout(idx, cfg.bos_id) if cfg.doc_isolation else None

    def add_skip(self, x, skip, i: int):
        """U-Net skip i: x + w * skip, or with SKIP_GATES lerp(w * skip, x, sigmoid(gate))."""
        if not self.cfg.skip_gates:
            return x + self.skip_weights[i] * skip
        return torch.lerp(self.skip_weights[i] * skip, x, torch.sigmoid(self.skip_gates[i]).to(x.dtype))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) -> final hidden state (B, T, D), before the last norm."""
        x, docs = self.embed(idx)
        x0, lanes = x, None
        ve = self.value_embed(idx) if self.ve_layers else None
        skips, v_first, n = [], None, len(self.schedule)
        num_skips = min(self.num_skips, n // 2)  # fewer pairs while a loop is off
        for pos, layer in enumerate(self.schedule):
            if self.use_unet and pos >= n - num_skips and skips:
                skip = skips.pop()
                if lanes is None:
                    x = self.add_skip(x, skip, n - 1 - pos)
                else:
                    lanes = tuple(self.add_skip(lane, skip, n - 1 - pos) for lane in lanes)
            ln_gain = 1.0 / math.sqrt(pos + 1) if self.use_ln_scale else 1.0
            layer_ve = None
            if layer in self.ve_layers:
                layer_ve = self.ve_scale[self.ve_layers.index(layer)] * ve
            if lanes is None and self.cfg.parallel_start and layer >= self.cfg.parallel_start:
                lanes = (x, x)
            if lanes is None:
                x, v = self.blocks[layer](x, x0, ln_gain, v_first, layer_ve, docs)
            else:
                lanes, v = self.blocks[layer].forward_lanes(lanes, x0, ln_gain, v_first, layer_ve, docs)
            if v_first is None:
                v_first = v
            if self.use_unet and pos < num_skips:
                skips.append(x if lanes is None else 0.5 * (lanes[0] + lanes[1]))
        return x if lanes is None else 0.5 * (lanes[0] + lanes[1])

    def loss(self, idx, targets, weights=None) -> torch.Tensor:
        """Training objective: cross-entropy, plus the Leech resonance term when it is on."""
        x = self.hidden(idx)
        loss = lm_loss(self.head(x), targets, weights)
        if self.cfg.leech_loss_weight > 0:
            loss = loss + leech_resonance_loss(x.float(), self.cfg.leech_loss_weight, self.cfg.leech_loss_max_blocks)
        return loss


def lm_loss(logits, targets, weights=None) -> torch.Tensor:
    """Mean cross-entropy over every target (optionally per-token weighted). logits: (B, T, V)."""
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if weights is None:
        return nll.mean()
    w = weights.reshape(-1)
    return (nll * w).sum() / w.sum()


def layer_schedule(num_layers: int, recur_layers: list[int]) -> list[int]:
    """Physical block index per virtual layer: recurrent layers run twice, back to back as a group.
    E.g. 6 layers, recur [2, 3] -> [0, 1, 2, 3, 2, 3, 4, 5]."""
    if not recur_layers:
        return list(range(num_layers))
    recur = sorted(recur_layers)
    last = recur[-1]
    return list(range(last + 1)) + recur + list(range(last + 1, num_layers))


def loop_schedule(num_layers: int, start: int, end: int, num_loops: int) -> list[int]:
    """Layers start..end run 1 + num_loops times: 11, 3..5, 2 -> [0..5, 3, 4, 5, 3, 4, 5, 6..10]."""
    return list(range(end + 1)) + list(range(start, end + 1)) * num_loops + list(range(end + 1, num_layers))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
