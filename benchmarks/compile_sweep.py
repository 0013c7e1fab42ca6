"""torch.compile on the CPU for every preset's architecture at reduced width: compile time, recompiles
after warm-up, step time compiled vs eager, loss difference, and bf16-autocast vs fp32 loss.

    flock /tmp/lila_timed.lock python benchmarks/compile_sweep.py [--steps 6] [--width 64]

Reduced width: model_dim --width (heads from the preset, head_dim at least 8), layers capped at 4,
seq 64, batch 4; every switch of the preset kept. Timed: run it alone (the lock), load is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lila_golf.core.config import PRESETS, GPTConfig, Hyperparameters  # noqa: E402
from lila_golf.core.model import GPT  # noqa: E402
from lila_golf.core.optim import build_optimizers  # noqa: E402
from lila_golf.core.train import optimizer_kwargs  # noqa: E402


def small_config(preset: str, width: int) -> GPTConfig:
    hp = Hyperparameters.from_env({"PRESET": preset})
    cfg = GPTConfig.from_hparams(hp).__dict__
    heads = min(cfg["num_heads"], width // 8)
    kv = max(1, min(cfg["num_kv_heads"], heads))
    while heads % kv:
        kv -= 1
    head_dim = width // heads
    cfg.update(model_dim=width, num_heads=heads, num_kv_heads=kv, num_layers=min(cfg["num_layers"], 4),
               rope_dims=min(cfg["rope_dims"], head_dim // 2 * 2), bigram_hash_buckets=min(cfg["bigram_hash_buckets"], 64),
               bigram_dim=16, xsa_last_n=min(cfg["xsa_last_n"], 4), recur_layers="", value_embed_layers="")
    return GPTConfig(**cfg)


def run(model, owner, data, autocast=False) -> tuple[list[float], list[float]]:
    opts = build_optimizers(owner, **optimizer_kwargs(Hyperparameters.from_env({"PRESET": "record"}), torch.device("cpu")))
    losses, times = [], []
    for seq in data:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(seq[:, :-1], seq[:, 1:])
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        times.append(1000 * (time.perf_counter() - t0))
        losses.append(float(loss.detach()))
    return losses, times


def sweep_one(preset: str, width: int, steps: int) -> dict:
    torch.manual_seed(0)
    cfg = small_config(preset, width)
    gen = torch.Generator().manual_seed(1)
    data = [torch.randint(0, cfg.vocab_size, (4, 65), generator=gen) for _ in range(steps)]
    eager, twin, bf = GPT(cfg), GPT(cfg), GPT(cfg)
    twin.load_state_dict(eager.state_dict())
    bf.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    compiled = torch.compile(twin, dynamic=False, fullgraph=True)
    got, t_comp = run(compiled, twin, data)
    frames_after_warmup = counters["stats"]["unique_graphs"]
    want, t_eager = run(eager, eager, data)
    bf_losses, _ = run(bf, bf, data, autocast=True)
    warm = 2  # steps that compile (forward+backward graphs), then steady state
    return {"preset": preset, "params": sum(p.numel() for p in eager.parameters()), "model_dim": width,
            "compile_first_steps_s": round(sum(t_comp[:warm]) / 1000, 1),
            "step_ms_compiled": round(sum(t_comp[warm:]) / len(t_comp[warm:]), 2),
            "step_ms_eager": round(sum(t_eager[warm:]) / len(t_eager[warm:]), 2),
            "unique_graphs": frames_after_warmup,
            "max_loss_diff_compiled_vs_eager": max(abs(a - b) for a, b in zip(got, want)),
            "max_loss_diff_bf16_vs_fp32": max(abs(a - b) for a, b in zip(bf_losses, want))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--presets", nargs="*", default=sorted(PRESETS))
    args = p.parse_args()
    print(f"loadavg_start:{open('/proc/loadavg').read().split()[:3]} threads:{torch.get_num_threads()}")
    for preset in args.presets:
        print(json.dumps(sweep_one(preset, args.width, args.steps)), flush=True)
    print(f"loadavg_end:{open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
