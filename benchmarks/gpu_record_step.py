"""Step time of the `record` preset on one GPU: compile, loop off, the loop switch (a recompile), loop on.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_record_step.py --steps 10            # CUDA, torch.compile, bf16
    python benchmarks/gpu_record_step.py --tiny --steps 2                          # a CPU smoke of this script

One rank's share of an 8-GPU record step: a micro-batch of TRAIN_BATCH_TOKENS / 8 tokens (48 x 2048),
forward + backward under bf16 autocast through torch.compile, then the optimisers' step (Muon with
Polar Express over every matrix: on 8 GPUs each rank orthogonalises 1/8 of them and the updates are
all-reduced, which this single GPU does not show). Token ids are random with a BOS every 1,024
tokens (the cost does not depend on them). Printed: the first call of each graph (compile), the
median of the timed steps (forward+backward and optimiser separately), tokens/s, the model FLOPs
utilisation by benchmarks/record_budget.py's FLOP count, and peak memory.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_budget import flops_per_token  # noqa: E402

from lila_golf.core.config import GPTConfig, Hyperparameters  # noqa: E402
from lila_golf.core.model import GPT, count_params  # noqa: E402
from lila_golf.core.optim import build_optimizers  # noqa: E402
from lila_golf.core.train import optimizer_kwargs  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return 1000 * (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ranks", type=int, default=8, help="the micro-batch is TRAIN_BATCH_TOKENS / ranks")
    p.add_argument("--tiny", action="store_true", help="a small shape on CPU, no compile (smoke test)")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args()
    env = {"PRESET": "record"}
    if args.tiny:
        env.update(MODEL_DIM="128", TRAIN_SEQ_LEN="128", TRAIN_BATCH_TOKENS="2048", VOCAB_SIZE="512")
    hp = Hyperparameters.from_env(env)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_hparams(hp)).to(device)
    opts = build_optimizers(model, **optimizer_kwargs(hp, device))
    forward = torch.compile(model) if device.type == "cuda" else model
    rows = hp.train_batch_tokens // args.ranks // hp.train_seq_len
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, hp.vocab_size, (rows, hp.train_seq_len + 1), generator=g)
    tokens.view(-1)[::1024] = hp.bos_id
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)

    losses = []

    def fwd_bwd():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = forward(x, y)
        loss.backward()
        losses.append(loss.detach())

    def opt_step():
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "params": count_params(model), "micro_batch": [rows, hp.train_seq_len]}
    for looping in (False, True):
        model.set_looping(looping)
        first = timed(fwd_bwd, device) + timed(opt_step, device)  # compiles this graph
        timed(fwd_bwd, device)  # one more untimed: let autotuning settle
        fb, op = [], []
        for _ in range(args.steps):
            fb.append(timed(fwd_bwd, device))
            op.append(timed(opt_step, device))
        ms_fb, ms_op = statistics.median(fb), statistics.median(op)
        tokens_per_s = rows * hp.train_seq_len / ((ms_fb + ms_op) / 1000)
        mfu = flops_per_token(hp, looping) * tokens_per_s / (args.peak_tflops * 1e12)
        key = "loop_on" if looping else "loop_off"
        result[key] = {"last_loss": float(losses[-1]), "first_step_ms": first, "fwd_bwd_ms": ms_fb, "opt_ms": ms_op, "tokens_per_s": tokens_per_s,
                       "mfu": mfu, "fwd_bwd_all": fb, "opt_all": op}
        print(f"{key}: first_step(compile):{first:.0f}ms fwd_bwd:{ms_fb:.1f}ms opt:{ms_op:.1f}ms "
              f"tokens_per_s:{tokens_per_s:.0f} mfu:{mfu:.3f} loss:{float(losses[-1]):.4f}", flush=True)
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        print(f"peak_memory:{result['peak_memory_gib']:.1f}GiB device:{result['device']} torch:{torch.__version__}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
