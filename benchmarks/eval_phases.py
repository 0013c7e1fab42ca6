"""Gain and cost of every final-evaluation phase on the CPU-track record's seed artifacts (val head).

    .venv/bin/python benchmarks/eval_phases.py                         # the 3 seeds, scores (untimed)
    flock /tmp/lila_timed.lock .venv/bin/python benchmarks/eval_phases.py --seeds 1 --tag timed
    .venv/bin/python benchmarks/eval_phases.py --seeds 1 --set TTT_MODE=phased --tag phased

For each seed's artifact (records/track_cpu_10min/<record>/final_model_seed<S>.int8.zlib.lgz, seq_len
256 from the record's config line) on every target of the val head, runs the phases of
lila_golf.core.final_eval one by one: plain, sliding (EVAL_STRIDE), the n-gram mixed over sliding,
TTT (TTT_MODE), the n-gram mixed over TTT; then final_evaluation itself with all of them on, whose
final_submitted line must equal the last phase. Appends one JSON line per phase to
benchmarks/results/eval_phases.jsonl (val_loss, val_bpb, wall seconds and tokens/s, CPU seconds and
tokens per CPU second (what a free core would take: the machine is shared), 1-minute load average).
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
from lila_golf.core.data import build_byte_tables, load_tokenizer, load_val_tokens, target_bytes  # noqa: E402
from lila_golf.core.final_eval import final_evaluation, ngram_phase, phase_result, ttt_phase, window_phase  # noqa: E402
from lila_golf.tools.evalfinal import final_hparams  # noqa: E402
from lila_golf.tools.generate import load_model  # noqa: E402

RECORD = ROOT / "records" / "track_cpu_10min" / "2026-11-23_BigramXSA_LeakyD192x5"
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "eval_phases.jsonl"
DEFAULT_SETS = ["EVAL_STRIDE=64", "TTT_MODE=doc", "NGRAM_ORDER=8"]


def timed(fn):
    """(fn(), wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def run_seed(seed: int, args, tokens, tables, n_bytes: int) -> list[dict]:
    model, header = load_model(RECORD / f"final_model_seed{seed}.int8.zlib.lgz", args.tokenizer)
    hp = final_hparams({}, header, 256, DEFAULT_SETS + (args.set or []))
    t = torch.from_numpy(tokens)
    batch = max(1, hp.val_batch_tokens // hp.train_seq_len)
    rows = []

    def record(name, logp, clocks, **extra):
        seconds, cpu = clocks
        res = phase_result(name, logp, n_bytes, seconds, **extra)
        res.update(seed=seed, tag=args.tag, tokens_per_s=res["targets"] / seconds, cpu_s=cpu,
                   tokens_per_cpu_s=res["targets"] / cpu, threads=torch.get_num_threads(),
                   loadavg_1min=os.getloadavg()[0], config=" ".join(DEFAULT_SETS + (args.set or [])))
        print(json.dumps(res), flush=True)
        rows.append(res)

    (lp, _), s = timed(lambda: window_phase(model, t, 256, 256, batch, None))
    record("plain", lp, s)
    (lp, ent), s = timed(lambda: window_phase(model, t, 256, hp.eval_stride, batch, None))
    record("sliding", lp, s, stride=hp.eval_stride)
    (mix, w), s = timed(lambda: ngram_phase(lp, ent, tokens, hp, torch.device("cpu")))
    record("sliding+ngram", mix, s, mean_weight=w)
    (lp, ent), s = timed(lambda: ttt_phase(model, t, hp, tables.bos_id, None))
    record("ttt", lp, s, mode=hp.ttt_mode)
    (mix, w), s = timed(lambda: ngram_phase(lp, ent, tokens, hp, torch.device("cpu")))
    record("ttt+ngram", mix, s, mean_weight=w)
    if args.final:
        lines = []
        res = final_evaluation(model, tokens, tables, hp, torch.device("cpu"), None, lines.append)
        print(lines[-1], flush=True)
        assert abs(res["submitted"]["val_bpb"] - rows[-1]["val_bpb"]) < 1e-9, (res["submitted"], rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--set", action="append", help="KEY=VALUE config overrides (after the defaults)")
    ap.add_argument("--tag", default="scores")
    ap.add_argument("--final", action="store_true", help="also run final_evaluation and check its submitted line")
    ap.add_argument("--tokenizer", default=str(DATA / "tokenizers" / "fineweb_1024_bpe.model"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokens = load_val_tokens(str(DATA / "fineweb10B_sp1024_mini" / "fineweb_val_000000.bin"), 1024).astype(np.int64)
    tables = build_byte_tables(load_tokenizer(args.tokenizer), 1024)
    n_bytes = int(target_bytes(tokens[:-1], tokens[1:], tables).sum())
    RESULTS.parent.mkdir(exist_ok=True)
    for seed in args.seeds:
        for row in run_seed(seed, args, tokens, tables, n_bytes):
            with open(RESULTS, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
