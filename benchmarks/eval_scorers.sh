#!/usr/bin/env bash
# Scorers on a CPU-track model, all on the official val head (131,071 targets) with exact bytes:
# plain, sliding (stride 64), sliding + n-gram, sliding + TTT, all together; tokens/s of each.
#     bash benchmarks/eval_scorers.sh runs/cpu_track/stack_s1 > benchmarks/results/eval_scorers.txt
set -euo pipefail
RUN=${1:?run folder}
SEQ=$(python -c "import json,sys; print(json.load(open('$RUN/config.json'))['train_seq_len'])")
for spec in "model $SEQ" "model 64" "model+ngram 64" "model+ttt 64" "model+ngram+ttt 64"; do
  set -- $spec
  echo "scorer:$1 stride:$2 load_avg:$(cut -d' ' -f1 /proc/loadavg)"
  python -m lila_golf eval "$RUN" --scorer "$1" --stride "$2" --quiet | tail -1
done
