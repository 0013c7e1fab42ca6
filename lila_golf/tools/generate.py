"""Sample text from a trained artifact, optionally steered by the E8 graph-resonator memory.

    python -m lila_golf generate --artifact runs/x/final_model.int8.zlib.lgz --prompt "The city" \\
        --max-tokens 120 --temperature 0.8 --top-k 50 --top-p 0.95 \\
        --repetition-penalty 1.1 --repetition-window 64 --resonance-strength 1.5 --show-resonance

Every multi-word flag is also accepted with underscores (--max_tokens, --top_k, ...).

The artifact is read with lila_golf.core.artifact.load_artifact (no pickle); the model is rebuilt from the
header's "model_config". The tokenizer is --tokenizer, else the "tokenizer_path" of the header or of the
run's config.json beside the artifact; its sha256 must equal the header's "tokenizer_sha256". The prompt
is encoded as a document (BOS + ids, as in training). Past the training length (--seq-len, else the
run's train_seq_len, else 1024) the context slides: the model sees the last seq_len tokens.

E8 graph-resonator memory (E8Resonator): every token is mapped to an E8 root through an 8-dim
projection of its (tied) embedding: the first 8 principal components of the embedding matrix, each
scaled to unit variance, then the nearest of the 240 roots. Observed token transitions a -> b add
weight to the root transition root(a) -> root(b) (prompt transitions weigh --encode-relation-weight,
generated ones 1). Before sampling after token a, the successor distribution of root(a) is spread once
over the root graph (roots joined when their inner product is 1; 56 neighbours each),

    field = p + (1/2) A p / 56,   p = counts[root(a)] / sum,   A the root graph's adjacency,

normalised to max 1, and every token v gets the logit bonus resonance_strength * field[root(v)].
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..core.artifact import ArtifactError, load_artifact, read_artifact_header
from ..core.data import load_tokenizer, tokenizer_sha256
from ..core.lattice import e8_nearest_root, e8_roots
from ..core.model import GPT, GPTConfig

DEFAULT_SEQ_LEN = 1024


class GenerateError(ValueError):
    """Bad input to the generate command (artifact, tokenizer, prompt or flags)."""


# --- the E8 graph-resonator memory ------------------------------------------------------------------

def token_roots(embeddings: torch.Tensor) -> torch.Tensor:
    """Root index (V,) of every token: whitened top-8 PCA projection of the embedding (V, D), then
    the nearest E8 root. Component signs are fixed (largest |loading| positive), so it is deterministic."""
    if embeddings.ndim != 2 or embeddings.shape[1] < 8:
        raise GenerateError(f"resonator needs a (V, D >= 8) embedding, got shape {tuple(embeddings.shape)}")
    e = embeddings.detach().double()
    e = e - e.mean(dim=0)
    _, s, vh = torch.linalg.svd(e, full_matrices=False)
    comps = vh[:8]                                                   # (8, D)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    proj = e @ (comps * signs).T / (s[:8] / (e.shape[0] - 1) ** 0.5).clamp_min(1e-12)  # (V, 8), unit variance
    return e8_nearest_root(proj)


class E8Resonator:
    """Root-transition memory on the E8 root graph (formula in the module docstring)."""

    def __init__(self, embeddings: torch.Tensor):
        self.token_root = token_roots(embeddings)                    # (V,)
        roots = torch.tensor(e8_roots())
        self.adjacency = ((roots @ roots.T - 1).abs() < 1e-9).double()  # (240, 240), 56 per row
        self.counts = torch.zeros(240, 240, dtype=torch.float64)

    def observe(self, prev_token: int, token: int, weight: float = 1.0) -> None:
        self.counts[self.token_root[prev_token], self.token_root[token]] += weight

    def observe_sequence(self, tokens: list[int], weight: float) -> None:
        for a, b in zip(tokens[:-1], tokens[1:]):
            self.observe(a, b, weight)

    def field(self, token: int) -> torch.Tensor:
        """Resonance of every root (240,) as successor of `token`'s root, in [0, 1]; zeros when the
        root has no observed successor."""
        row = self.counts[self.token_root[token]]
        total = row.sum()
        if total <= 0:
            return torch.zeros(240, dtype=torch.float64)
        p = row / total
        spread = p + 0.5 * (self.adjacency @ p) / 56.0
        return spread / spread.max()

    def bias(self, token: int, strength: float) -> torch.Tensor:
        """Logit bonus (V,) float32 for the token after `token`."""
        return (strength * self.field(token)[self.token_root]).float()


# --- sampling ---------------------------------------------------------------------------------------

def apply_repetition_penalty(logits: torch.Tensor, recent: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty (Keskar et al. 2019) on the distinct recent tokens: positive logits are
    divided by `penalty`, negative ones multiplied. logits (V,) -> (V,)."""
    if penalty == 1.0 or not recent:
        return logits
    idx = torch.tensor(sorted(set(recent)), dtype=torch.long)
    picked = logits[idx]
    out = logits.clone()
    out[idx] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return out


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator) -> int:
    """One token from logits (V,): greedy when temperature <= 0, else softmax(logits / T) restricted
    to the top_k tokens (0 = all) and the smallest set of probability >= top_p (1 = all)."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p     # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def next_token_logits(model: GPT, ids: list[int], seq_len: int, *, repetition_penalty: float = 1.0,
                      repetition_window: int = 0, resonator: E8Resonator | None = None,
                      resonance_strength: float = 0.0) -> torch.Tensor:
    """Logits (V,) float32 for the token after `ids`: the model on the last seq_len tokens (sliding
    context), then the repetition penalty over the last repetition_window tokens (0 = all of the
    context), then the resonator bias."""
    context = ids[-seq_len:]
    logits = model(torch.tensor([context], dtype=torch.long))[0, -1].float()
    window = context[-repetition_window:] if repetition_window > 0 else context
    logits = apply_repetition_penalty(logits, window, repetition_penalty)
    if resonator is not None:
        logits = logits + resonator.bias(ids[-1], resonance_strength)
    return logits


def generate_tokens(model: GPT, prompt_ids: list[int], *, max_tokens: int, seq_len: int,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    repetition_penalty: float = 1.0, repetition_window: int = 0,
                    resonator: E8Resonator | None = None, resonance_strength: float = 0.0,
                    encode_relation_weight: float = 1.0, prompt_skip: int = 0, seed: int = 0,
                    on_token=None) -> list[int]:
    """Sample max_tokens tokens after prompt_ids; returns the new ids. The resonator (if any) first
    stores the prompt's transitions (after its first prompt_skip ids, e.g. BOS) with weight
    encode_relation_weight, then each generated one with weight 1. on_token(step, token, info) is
    called per token with info = {"root", "resonance", "bias"} of the chosen token (None without a
    resonator). Sampling draws come from one torch.Generator seeded with `seed` only."""
    if not prompt_ids:
        raise GenerateError("empty prompt: nothing to condition on")
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    if resonator is not None:
        resonator.observe_sequence(list(prompt_ids[prompt_skip:]), encode_relation_weight)
    ids, new = list(prompt_ids), []
    for step in range(max_tokens):
        logits = next_token_logits(model, ids, seq_len, repetition_penalty=repetition_penalty,
                                   repetition_window=repetition_window, resonator=resonator,
                                   resonance_strength=resonance_strength)
        token = sample_next(logits, temperature, top_k, top_p, generator)
        info = None
        if resonator is not None:
            root = int(resonator.token_root[token])
            resonance = float(resonator.field(ids[-1])[root])
            info = {"root": root, "resonance": resonance, "bias": resonance_strength * resonance}
            resonator.observe(ids[-1], token, 1.0)
        ids.append(token)
        new.append(token)
        if on_token is not None:
            on_token(step, token, info)
    return new


# --- loading ----------------------------------------------------------------------------------------

def _generate_run_config(artifact: Path) -> dict:
    """The run's config.json beside the artifact ({} when absent or unreadable)."""
    path = artifact.parent / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def resolve_tokenizer(artifact: Path, header: dict, given: str | None) -> Path:
    """--tokenizer, else the header's or the run config's tokenizer_path (as given, then relative to
    the artifact's folder)."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise GenerateError(f"--tokenizer {given}: file not found")
        return path
    recorded = header.get("tokenizer_path") or _generate_run_config(artifact).get("tokenizer_path")
    for path in ([Path(recorded), artifact.parent / recorded] if recorded else []):
        if path.is_file():
            return path
    where = f"recorded path {recorded!r} not found" if recorded else "no tokenizer path recorded"
    raise GenerateError(f"{artifact}: {where}; pass --tokenizer PATH")


def resolve_seq_len(artifact: Path, header: dict, given: int | None) -> int:
    """--seq-len, else train_seq_len from the header's model_config or the run's config.json."""
    seq_len = given or header.get("model_config", {}).get("train_seq_len") \
        or _generate_run_config(artifact).get("train_seq_len") or DEFAULT_SEQ_LEN
    if int(seq_len) < 1:
        raise GenerateError(f"--seq-len must be >= 1, got {seq_len}")
    return int(seq_len)


def load_model(artifact: Path, tokenizer: Path) -> tuple[GPT, dict]:
    """Verify the tokenizer hash, load the artifact, rebuild GPT(GPTConfig(**model_config))."""
    state, header = load_artifact(artifact, tokenizer_sha256=tokenizer_sha256(tokenizer))
    cfg = dict(header.get("model_config") or {})
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise GenerateError(f"{artifact}: model_config has fields this code does not know: {unknown}")
    try:
        with torch.device("meta"):  # count the parameters before allocating any: a header may ask for anything
            planned = GPT(GPTConfig(**cfg)).state_dict()
    except (TypeError, ValueError) as exc:
        raise GenerateError(f"{artifact}: model_config does not build a model ({exc})") from exc
    wanted = {k: tuple(v.shape) for k, v in planned.items()}
    if wanted != {k: tuple(v.shape) for k, v in state.items()}:
        raise GenerateError(f"{artifact}: model_config asks for {sum(map(_numel, wanted.values())):,} weights in "
                            f"{len(wanted)} tensors, the artifact holds {sum(v.numel() for v in state.values()):,} "
                            f"in {len(state)}: they do not fit")
    model = GPT(GPTConfig(**cfg))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GenerateError(f"{artifact}: weights do not fit the model_config ({exc})") from exc
    return model.eval(), header


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- command line -----------------------------------------------------------------------------------

def _generate_flag(parser, name: str, **kwargs) -> None:
    """--a-b, also accepted as --a_b."""
    names = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample text from an artifact (E8 resonator optional)",
                              description=__doc__.split("\n\n")[0])
    _generate_flag(p, "artifact", required=True, help="the .lgz artifact")
    _generate_flag(p, "prompt", default="", help="prompt text (encoded as BOS + ids)")
    _generate_flag(p, "tokenizer", default=None, help="tokenizer .model (default: the recorded path)")
    _generate_flag(p, "max-tokens", type=int, default=100)
    _generate_flag(p, "temperature", type=float, default=0.8, help="0 = greedy")
    _generate_flag(p, "top-k", type=int, default=0, help="0 = no top-k cut")
    _generate_flag(p, "top-p", type=float, default=1.0, help="1 = no nucleus cut")
    _generate_flag(p, "repetition-penalty", type=float, default=1.0, help="1 = off")
    _generate_flag(p, "repetition-window", type=int, default=64, help="0 = the whole context")
    _generate_flag(p, "no-resonator", action="store_true", help="turn the E8 resonator memory off")
    _generate_flag(p, "resonance-strength", type=float, default=1.0, help="max logit bonus of the resonator")
    _generate_flag(p, "encode-relation-weight", type=float, default=1.0,
                   help="weight of each prompt transition in the resonator memory")
    _generate_flag(p, "seq-len", type=int, default=None, help="context length (default: the run's train_seq_len)")
    _generate_flag(p, "seed", type=int, default=0)
    _generate_flag(p, "show-resonance", action="store_true", help="print the resonance state per token")
    p.set_defaults(func=run_generate)


def _generate_check_flags(args) -> None:
    if args.max_tokens < 0:
        raise GenerateError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    if not 0 < args.top_p <= 1:
        raise GenerateError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0 or args.repetition_window < 0:
        raise GenerateError("--top-k and --repetition-window must be >= 0")
    if args.repetition_penalty <= 0:
        raise GenerateError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")


def run_generate(args) -> int:
    """Entry point of `python -m lila_golf generate`; prints the continuation (and resonance lines)."""
    try:
        _generate_check_flags(args)
        artifact = Path(args.artifact)
        header = read_artifact_header(artifact)
        tokenizer = resolve_tokenizer(artifact, header, args.tokenizer)
        model, header = load_model(artifact, tokenizer)
    except (GenerateError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sp = load_tokenizer(tokenizer)
    seq_len = resolve_seq_len(artifact, header, args.seq_len)
    prompt_ids = [int(sp.bos_id())] + list(sp.encode(args.prompt))
    resonator = None if args.no_resonator else E8Resonator(model.tok_emb.weight)

    def show(step, token, info):
        if args.show_resonance and info is not None:
            print(f"resonance step:{step} token:{token} piece:{sp.id_to_piece(token)!r} root:{info['root']} "
                  f"resonance:{info['resonance']:.4f} bias:{info['bias']:.4f}")

    new = generate_tokens(model, prompt_ids, max_tokens=args.max_tokens, seq_len=seq_len,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, repetition_window=args.repetition_window,
                          resonator=resonator, resonance_strength=args.resonance_strength,
                          encode_relation_weight=args.encode_relation_weight, prompt_skip=1,
                          seed=args.seed, on_token=show)
    print(sp.decode(prompt_ids[1:] + new))  # joined as the tokenizer joins them ("voted" + "▁in" = "voted in")
    return 0
