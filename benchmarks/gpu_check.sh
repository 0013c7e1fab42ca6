#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the `device` tool): the CUDA tests, a compiled smoke run of
# train_gpt.py under torchrun (NCCL, GPTQ on the GPU), and the record preset's export measured on one
# GPU (the packed record file, sp8192 CaseOps shards, GPTQ inside the clock). Results under $OUT.
#   needs beside the repo (both in .git/info/exclude, named in the call's carry):
#   .whl/      brotli and zstandard wheels for the machine's Python (cp312)
#   .gpudata/  laid out like ../shared/data (fineweb10B_sp1024_mini/, tokenizers/ with the sp1024 and
#              CaseOps models) plus caseops/: `python -m lila_golf data tokenize --tokenizer <CaseOps model>
#              --out .gpudata/caseops --val-docs 108 <the shared val, verify and legal docs>`
# Seen on the H200 (2026-11-30, RESULTS.md "The GPU check"): the CUDA tests ~40 s, the smoke run ~70 s;
# one GPU estimates the record preset's GPTQ reserve at ~69 s, so --seconds must stay well above it.
# The whole script needs ~9 minutes of a 10-minute call: run it alone, with nothing else in the call.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1
mkdir -p ../shared && ln -sfn "$REPO/.gpudata" ../shared/data
D=$REPO/.gpudata/fineweb10B_sp1024_mini; T=$REPO/.gpudata/tokenizers/fineweb_1024_bpe.model
C=$REPO/.gpudata/caseops; CT=$REPO/.gpudata/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_compile.py tests/test_collectives.py \
  --durations=8 > "$OUT/pytest.txt" 2>&1
(mkdir -p /tmp/smoke && cd /tmp/smoke && PRESET=smoke MODEL_DIM=256 COMPILE=1 QUANT_SCHEME=int6_gptq CODEC=brotli MAX_WALLCLOCK_SECONDS=20 \
  DATA_PATH=$D TOKENIZER_PATH=$T RUN_ID=smoke timeout 110 torchrun --standalone --nproc_per_node=1 "$REPO/train_gpt.py" > "$OUT/smoke.txt" 2>&1)
python3 benchmarks/record_export.py --preset record --seconds 120 --timeout 330 --data "$C" --tokenizer "$CT" \
  --out "$OUT/record_export.json" --log-out "$OUT/record_train.log" > "$OUT/record_export.txt" 2>&1
tail -3 "$OUT/pytest.txt"; grep -E "world_size|time_budget|roundtrip|artifact_valid|step_avg" "$OUT/smoke.txt" | tail -6; head -40 "$OUT/record_export.txt"
