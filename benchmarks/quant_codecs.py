"""Quantisation x codec on a CPU-track-trained model: bits/param, roundtrip bpb gap, distance from
the zero-order entropy H0, encode/decode time, and the parameter count 16,000,000 bytes buys.

    python benchmarks/quant_codecs.py runs/cpu_track/stack_s1 [--calib-batches 4]

Reads the run's float weights (final_weights.lgck, written with SAVE_FLOAT_WEIGHTS=1) and config,
writes a real artifact per (scheme, codec) into a temp folder, reloads it from disk and scores the
whole val head with exact bytes. The GPTQ Hessians come from training batches only.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from lila_golf.core.artifact import load_artifact, read_artifact_header, save_artifact
from lila_golf.core.checkpoint import load_checkpoint
from lila_golf.core.config import Hyperparameters
from lila_golf.core.data import DistributedTokenLoader, shard_file, build_byte_tables, load_tokenizer, tokenizer_sha256
from lila_golf.core.evaluate import eval_val_plain
from lila_golf.core.model import GPT, GPTConfig
from lila_golf.core.quant import collect_hessians
from lila_golf.core.train import load_validation

LIMIT = 16_000_000
SETTINGS = [("int8", "zlib"), ("int6_lite", "lzma"), ("int6_gptq", "lzma"), ("int6_gptq", "zstd"),
            ("int6_gptq", "brotli"), ("int6_gptq", "rans"), ("int5_gptq", "rans"), ("int4_gptq", "rans")]


def load_run(run_dir: Path):
    config = json.loads((run_dir / "config.json").read_text())
    hp = Hyperparameters(**config)
    state, meta = load_checkpoint(str(run_dir / "final_weights.lgck"))
    model = GPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(state)
    return hp, model.eval(), state


def score(model, val, hp) -> dict:
    return eval_val_plain(model, val["tokens"], val["bytes"], hp.train_seq_len, torch.device("cpu"), batch_seqs=16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "quant_codecs.jsonl"))
    args = p.parse_args(argv)
    hp, model, state = load_run(args.run_dir)
    sp = load_tokenizer(hp.tokenizer_path)
    val = load_validation(hp, build_byte_tables(sp, hp.vocab_size), print)
    tok_sha = tokenizer_sha256(hp.tokenizer_path)
    float_res = score(model, val, hp)
    num_params = sum(t.numel() for t in state.values())
    print(f"float val_bpb:{float_res['val_bpb']:.6f} params:{num_params} load_avg:{os.getloadavg()[0]:.2f}")
    loader = DistributedTokenLoader(shard_file(hp.data_path, "train"), 0, 1, hp.vocab_size)
    t0 = time.perf_counter()
    batches = [loader.next_batch(hp.train_batch_tokens, hp.train_seq_len, 1)[0] for _ in range(args.calib_batches)]
    hessians = collect_hessians(model, batches)
    calib_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheme, codec in SETTINGS:
            path = os.path.join(tmp, f"m.{scheme}.{codec}")
            t0 = time.perf_counter()
            nbytes = save_artifact(path, state, model_config=GPTConfig.from_hparams(hp).__dict__,
                                   tokenizer_sha256=tok_sha, scheme=scheme, codec=codec,
                                   hessians=hessians if scheme.endswith("_gptq") else None)
            encode_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded, header = load_artifact(path, tokenizer_sha256=tok_sha)
            decode_s = time.perf_counter() - t0
            fresh = GPT(GPTConfig(**header["model_config"]))
            fresh.load_state_dict(loaded)
            res = score(fresh.eval(), val, hp)
            head = read_artifact_header(path)
            bits_per_param = 8 * nbytes / num_params
            row = dict(run=str(args.run_dir), scheme=scheme, codec=codec, bytes=nbytes, bits_per_param=bits_per_param,
                       val_bpb=res["val_bpb"], bpb_gap=res["val_bpb"] - float_res["val_bpb"],
                       coded_over_h0=8 * head["sym_coded_bytes"] / head["sym_h0_bits"],
                       encode_s=encode_s, decode_s=decode_s, calib_s=calib_s if scheme.endswith("_gptq") else 0.0,
                       params_in_16mb=int(LIMIT * 8 / bits_per_param), load_avg=os.getloadavg()[0])
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{'scheme+codec':<20}{'bits/param':>11}{'bpb gap':>9}{'coded/H0':>9}{'enc s':>7}{'dec s':>7}{'params@16MB':>13}")
    for r in rows:
        print(f"{r['scheme'] + '+' + r['codec']:<20}{r['bits_per_param']:>11.3f}{r['bpb_gap']:>9.4f}"
              f"{r['coded_over_h0']:>9.3f}{r['encode_s']:>7.1f}{r['decode_s']:>7.1f}{r['params_in_16mb']:>13,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
