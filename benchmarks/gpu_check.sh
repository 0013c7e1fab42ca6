#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the `device` tool): the CUDA tests, a compiled smoke run
# with GPTQ on the GPU, and the record preset's export measured on one GPU. Results under $OUT.
#   needs beside the repo: .whl/ (brotli, zstandard wheels for the machine's Python) and .gpudata/
#   laid out like ../shared/data (fineweb10B_sp1024_mini/, tokenizers/)
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1
mkdir -p ../shared && ln -sfn "$REPO/.gpudata" ../shared/data
D=$REPO/.gpudata/fineweb10B_sp1024_mini; T=$REPO/.gpudata/tokenizers/fineweb_1024_bpe.model
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_compile.py tests/test_collectives.py \
  --durations=8 > "$OUT/pytest.txt" 2>&1
(mkdir -p /tmp/smoke && cd /tmp/smoke && PRESET=smoke MODEL_DIM=256 COMPILE=1 QUANT_SCHEME=int6_gptq CODEC=brotli MAX_WALLCLOCK_SECONDS=30 \
  DATA_PATH=$D TOKENIZER_PATH=$T RUN_ID=smoke timeout 150 python3 "$REPO/train_gpt.py" > "$OUT/smoke.txt" 2>&1)
timeout 330 python3 benchmarks/record_export.py --seconds 100 --data "$D" --tokenizer "$T" \
  --out "$OUT/record_export.json" --log-out "$OUT/record_train.log" > "$OUT/record_export.txt" 2>&1
tail -3 "$OUT/pytest.txt"; grep -E "time_budget|roundtrip|artifact_valid|step_avg" "$OUT/smoke.txt" | tail -5; cat "$OUT/record_export.txt" | head -30
