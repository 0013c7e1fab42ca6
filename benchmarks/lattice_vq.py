"""E8 lattice vector quantisation of the weight matrices against per-coordinate rounding (Z^8) and
the project's int6_lite, at equal coded bytes, on a CPU-track-trained model.

    python benchmarks/lattice_vq.py runs/cpu_track/stack_s1 [--steps 0.08 0.11 0.16 0.23 0.33 0.47]

Quantised: every attention and MLP matrix of the blocks (the tensors int6 covers in a record);
embeddings and control tensors stay float, identical in every row of the table. Bytes are real
coded bytes of those matrices: our rANS coder (lila_golf/core/codec.py) on the symbols (E8: the first 7
packed coordinates, the halved 8th and the coset bits as three streams, see lila_golf/research/latticevq.py)
plus 2 bytes of fp16 scale a row. val_bpb: the model with the dequantised matrices, every target of
the val head, exact bytes. "at equal bytes": the Z^8 curve interpolated at the E8 point's bits
(val_bpb linear in bits, MSE log-linear in bits).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from lila_golf.core.codec import rans_encode
from lila_golf.core.data import build_byte_tables, load_tokenizer
from lila_golf.research.latticevq import vq_dequantize, vq_quantize
from lila_golf.core.model import GPT, GPTConfig
from lila_golf.core.quant import quantize_lite_rows
from lila_golf.core.train import load_validation

from quant_codecs import load_run, score

MATRIX = re.compile(r"blocks\.\d+\.(attn|mlp)\.\w+\.weight$")


def coded_bytes_vq(qs: list[dict], lattice: str) -> int:
    """rANS bytes of all matrices' symbols (one stream per symbol kind) + fp16 row scales."""
    scales = sum(2 * q["scale"].numel() for q in qs)
    if lattice == "z8":
        return len(rans_encode([q["symbols"][0] for q in qs])) + scales
    ints = [q["symbols"][0].reshape(q["symbols"][0].shape[0], -1, 8) for q in qs]  # (R, C/8, 8)
    firsts = [a[:, :, :7].reshape(a.shape[0], -1) for a in ints]
    lasts = [a[:, :, 7] for a in ints]
    cosets = [q["symbols"][1] for q in qs]
    return sum(len(rans_encode(s)) for s in (firsts, lasts, cosets)) + scales


def evaluate(model_cfg, state, new: dict, val, hp) -> float:
    model = GPT(GPTConfig(**model_cfg))
    model.load_state_dict({**state, **new})
    return score(model.eval(), val, hp)["val_bpb"]


def relative_mse(new: dict, state: dict) -> float:
    num = sum((new[k] - state[k].float()).pow(2).sum().item() for k in new)
    return num / sum(state[k].float().pow(2).sum().item() for k in new)


def interpolate(bits: float, curve: list[tuple[float, float]]) -> float:
    xs, ys = zip(*sorted(curve))
    return float(np.interp(bits, xs, ys, left=float("nan"), right=float("nan")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", nargs="+", type=float, default=[0.08, 0.11, 0.16, 0.23, 0.33, 0.47])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "lattice_vq.jsonl"))
    args = p.parse_args(argv)
    hp, model, state = load_run(args.run_dir)
    model_cfg = GPTConfig.from_hparams(hp).__dict__
    val = load_validation(hp, build_byte_tables(load_tokenizer(hp.tokenizer_path), hp.vocab_size), print)
    names = [k for k in state if MATRIX.search(k)]
    n_weights = sum(state[k].numel() for k in names)
    float_bpb = score(model, val, hp)["val_bpb"]
    print(f"float val_bpb:{float_bpb:.6f} matrices:{len(names)} weights:{n_weights} load:{os.getloadavg()[0]:.2f}")
    rows = []

    def record(method: str, step: float, nbytes: int, new: dict) -> None:
        row = dict(run=str(args.run_dir), method=method, step=step, bytes=nbytes,
                   bits_per_weight=8 * nbytes / n_weights, rel_mse=relative_mse(new, state),
                   val_bpb=evaluate(model_cfg, state, new, val, hp), float_val_bpb=float_bpb,
                   load_avg=os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)

    qs = [quantize_lite_rows(state[k], 6) for k in names]
    new = {k: (q.float() * s.float()[:, None]).reshape(state[k].shape) for k, (q, s) in zip(names, qs)}
    record("int6_lite", 0.0, len(rans_encode([q for q, _ in qs])) + sum(2 * s.numel() for _, s in qs), new)
    for step in args.steps:
        for lattice in ("z8", "e8"):
            qs = [vq_quantize(state[k].float(), lattice, step) for k in names]
            new = {k: vq_dequantize(q, lattice) for k, q in zip(names, qs)}
            record(lattice, step, coded_bytes_vq(qs, lattice), new)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    z8 = [(r["bits_per_weight"], r["val_bpb"]) for r in rows if r["method"] == "z8"]
    z8_log_mse = [(r["bits_per_weight"], np.log(r["rel_mse"])) for r in rows if r["method"] == "z8"]
    print(f"{'method':<10}{'step':>6}{'bits/w':>8}{'rel MSE':>10}{'val_bpb':>10}{'Z8 bpb @bits':>13}{'Z8 MSE @bits':>13}")
    for r in rows:
        b = r["bits_per_weight"]
        print(f"{r['method']:<10}{r['step']:>6.2f}{b:>8.3f}{r['rel_mse']:>10.5f}{r['val_bpb']:>10.5f}"
              f"{interpolate(b, z8):>13.5f}{np.exp(interpolate(b, z8_log_mse)):>13.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
