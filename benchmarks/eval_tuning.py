"""Choosing the final evaluation's n-gram and TTT settings on held-out text, never on the val head.

    .venv/bin/python benchmarks/eval_tuning.py ngram                       # discount/beta grid of the mixture
    .venv/bin/python benchmarks/eval_tuning.py ttt --config '{"chunk": 64, "lr": 0.003}'
    .venv/bin/python benchmarks/eval_tuning.py ttt --config '{"chunk": 64, "lr": 0.003, "phases": [10, 20, 30], "phase_lr": 0.03}'

The slice: tokens 6,000,000 .. 6,131,072 of fineweb_train_000001.bin (legal-domain FineWeb, 43
documents), which none of the CPU-track record's seed runs reached (each trained on <= 3.5M tokens);
the model: that record's seed-1 artifact. `ngram` scores the slice with sliding windows (stride 64),
then the learned mixture (core/ngrammix.py) at each (discount, beta); `ttt` runs the per-document
TTT (core/ttt.py DocTTT; `phases` = document counts after which the phased SGD pass runs) and the
mixture over it. Appends JSON lines to benchmarks/results/eval_tuning.jsonl.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lila_golf.core.data import bits_per_byte, build_byte_tables, load_tokenizer, read_shard, target_bytes  # noqa: E402
from lila_golf.core.final_eval import window_phase  # noqa: E402
from lila_golf.core.ngrammix import MixerConfig, learned_mixture, online_ngram  # noqa: E402
from lila_golf.core.ttt import DocTTT, document_spans  # noqa: E402
from lila_golf.tools.generate import load_model  # noqa: E402

ARTIFACT = ROOT / "records" / "track_cpu_10min" / "2026-11-23_BigramXSA_LeakyD192x5" / "final_model_seed1.int8.zlib.lgz"
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "eval_tuning.jsonl"
SLICE = (6_000_000, 6_131_072)
SEQ_LEN = 256


def bpb(logp, n_bytes):
    return bits_per_byte(-float(np.sum(logp)), n_bytes)


def mixture(logp, entropy, tokens, discount=0.75, beta=0.0):
    ng = online_ngram(tokens, 1024, 8, discount, beta)
    return ng, learned_mixture(logp, entropy, ng, MixerConfig(max_order=8))[0]


def write(row: dict) -> None:
    row.update(loadavg_1min=os.getloadavg()[0])
    print(json.dumps(row), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")


def tune_ngram(model, tokens, n_bytes) -> None:
    logp, entropy = window_phase(model, torch.from_numpy(tokens), SEQ_LEN, 64, 32, None)
    write(dict(what="sliding", bpb=bpb(logp, n_bytes)))
    for discount, beta in ((0.5, 3.0), (0.75, 1.0), (0.5, 1.0), (0.75, 0.0), (0.75, 0.5), (0.9, 1.0)):
        ng, mixed = mixture(logp, entropy, tokens, discount, beta)
        write(dict(what="ngram", discount=discount, beta=beta, ngram_bpb=bpb(ng.logp, n_bytes), mixed_bpb=bpb(mixed, n_bytes)))


def tune_ttt(model, tokens, n_bytes, config: dict) -> None:
    kw = dict(config)
    phases = kw.pop("phases", [])
    spans = document_spans(tokens, 1)
    engine = DocTTT(model, SEQ_LEN, **kw)
    logp, entropy = np.zeros(len(tokens) - 1), np.zeros(len(tokens) - 1)
    t = torch.from_numpy(tokens)
    t0, c0 = time.perf_counter(), time.process_time()
    bounds = [0] + [d for d in phases if d < len(spans)] + [len(spans)]
    for d0, d1 in zip(bounds[:-1], bounds[1:]):
        engine.score_documents(t, spans[d0:d1], logp, entropy)
        if d1 < len(spans):
            engine.phase_sgd(t, spans[d0:d1])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, mixed = mixture(logp, entropy, tokens)
    write(dict(what="ttt", config=config, ttt_bpb=bpb(logp, n_bytes), mixed_bpb=bpb(mixed, n_bytes), wall_s=wall, cpu_s=cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("ngram", "ttt"))
    ap.add_argument("--config", default='{"chunk": 64, "lr": 0.003}', help="DocTTT keyword arguments (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokenizer = DATA / "tokenizers" / "fineweb_1024_bpe.model"
    tokens = read_shard(DATA / "fineweb10B_sp1024_mini" / "fineweb_train_000001.bin", 1024)[slice(*SLICE)].astype(np.int64)
    n_bytes = int(target_bytes(tokens[:-1], tokens[1:], build_byte_tables(load_tokenizer(tokenizer), 1024)).sum())
    model, _ = load_model(ARTIFACT, tokenizer)
    RESULTS.parent.mkdir(exist_ok=True)
    if args.what == "ngram":
        tune_ngram(model, tokens, n_bytes)
    else:
        tune_ttt(model, tokens, n_bytes, json.loads(args.config))


if __name__ == "__main__":
    main()
