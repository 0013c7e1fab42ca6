"""Throughput and memory of the score-first n-gram scorer, projected to the official val set.

    .venv/bin/python benchmarks/ngram_speed.py                     # 8.1M tokens of train_000001
    .venv/bin/python benchmarks/ngram_speed.py --max-entries 4194304   # capped tables: bounded memory
    .venv/bin/python benchmarks/ngram_speed.py --max-tokens 2000000 --chunk-size 262144 --max-order 6

Scores a shard chunk by chunk (score, then update, as NgramScorer does), prints key:value lines:
tokens/s overall and over the last quarter (tables are largest there), CPU seconds and the 1-minute
load average before and after (on a shared machine wall time depends on the load; CPU time much
less), table bytes and peak RSS, then a projection for the 62,021,846-token validation set (time
from the overall rate, which includes the amortised table growth; memory scaled linearly in tokens,
or the fixed allocation when capped) and whether the time fits the 600 s evaluation budget. Also
prints val_bpb of the pure n-gram (counts starting empty) when --tokenizer is given.
"""
import argparse
import os
import resource
import time

import numpy as np

from lila_golf.core.data import bits_per_byte, build_byte_tables, load_tokenizer, read_shard, target_bytes
from lila_golf.core.scoring import NgramScorer

VAL_TOKENS = 62_021_846
EVAL_BUDGET_S = 600.0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process: unlike wall time, barely moved by other load on the box."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", default="../shared/data/fineweb10B_sp1024_mini/fineweb_train_000001.bin")
    ap.add_argument("--tokenizer", default="../shared/data/tokenizers/fineweb_1024_bpe.model")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=1 << 20)
    ap.add_argument("--max-order", type=int, default=10)
    ap.add_argument("--max-entries", type=int, default=None, help="cap on stored n-grams per context length")
    args = ap.parse_args()

    tokens = read_shard(args.shard, vocab_size=1024)[:args.max_tokens].astype(np.int64)
    scorer = NgramScorer(1024, max_order=args.max_order, max_entries=args.max_entries)
    scorer.begin(int(tokens[0]))
    n = len(tokens) - 1
    load_before, cpu_start = os.getloadavg()[0], cpu_seconds()
    nll, done, t_start, t_quarter, quarter_tokens = 0.0, 0, time.perf_counter(), None, 0
    for a in range(1, len(tokens), args.chunk_size):
        if t_quarter is None and done >= 0.75 * n:
            t_quarter, quarter_tokens = time.perf_counter(), done
        logp, _ = scorer.score_chunk(tokens[a:a + args.chunk_size])
        nll -= float(logp.sum())
        done += len(logp)
    elapsed, cpu = time.perf_counter() - t_start, cpu_seconds() - cpu_start
    tail_rate = (n - quarter_tokens) / (time.perf_counter() - t_quarter) if t_quarter else n / elapsed
    table_bytes = scorer.lm.nbytes()
    print(f"ngram_bench tokens:{n} chunk_size:{args.chunk_size} max_order:{args.max_order} seconds:{elapsed:.1f} "
          f"tokens_per_s:{n / elapsed:.0f} last_quarter_tokens_per_s:{tail_rate:.0f} cpu_seconds:{cpu:.1f} "
          f"tokens_per_cpu_s:{n / cpu:.0f} loadavg_1min_before:{load_before:.2f} after:{os.getloadavg()[0]:.2f}")
    print(f"ngram_bench table_bytes:{table_bytes} peak_rss_bytes:{peak_rss_bytes()} nats_per_token:{nll / n:.6f}")
    proj_s = VAL_TOKENS * elapsed / n
    print(f"ngram_projection tokens:{VAL_TOKENS} cpu_seconds:{VAL_TOKENS * cpu / n:.0f} (time if this process had a core)")
    # uncapped tables grow about linearly in tokens; capped ones are allocated at their final size
    proj_bytes = table_bytes * VAL_TOKENS / n if args.max_entries is None else table_bytes
    print(f"ngram_projection tokens:{VAL_TOKENS} seconds:{proj_s:.0f} table_bytes:{proj_bytes:.3g} "
          f"fits_600s:{proj_s <= EVAL_BUDGET_S}")
    if args.tokenizer:
        n_bytes = int(target_bytes(tokens[:-1], tokens[1:], build_byte_tables(load_tokenizer(args.tokenizer))).sum())
        print(f"ngram_bench val_bpb:{bits_per_byte(nll, n_bytes):.6f} bytes:{n_bytes}")


if __name__ == "__main__":
    main()
