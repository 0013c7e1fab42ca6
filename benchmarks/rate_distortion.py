"""Rate-distortion of weight export: roundtrip bpb gap against whole-model-file bits per parameter,
for the same trained float weights, across the record #1855 method and our schemes.

    python benchmarks/rate_distortion.py --train cpu      # make the CPU-track float weights
    python benchmarks/rate_distortion.py --train large    # make the 6 x d512 float weights (~30 min)
    python benchmarks/rate_distortion.py cpu large        # the curves, table and PNG

Models (both trained here, fixed seed and fixed step count, so the weights are reproducible):
    cpu    the CPU-track stack (records/track_cpu_10min: 5 x d192, MLP 3x, seq 256), 427 steps,
           the step count of the record's seed 1 in 600 s, same lr schedule (untimed)
    large  6 layers, d 512, 8 heads / 4 KV heads, MLP 3x, seq 512, the same techniques, 200 steps
           of 4,096 tokens (about 30 minutes on one core of the development machine)
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "fineweb10B_sp1024_mini"
TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
RD_RUNS = REPO / "runs" / "rate_distortion"

_STACK = dict(ACTIVATION="leaky_relu2", BIGRAM_HASH_BUCKETS="2048", SMEAR_GATE="1", XSA_LAST_N="2",
              LN_SCALE="1", ROPE_DIMS="16", WARMUP_STEPS="10", MATRIX_LR="0.06", SCALAR_LR="0.06",
              EMBED_LR="0.08", EMA_DECAY="0", GRAD_ACCUM_TOTAL="1", MAX_WALLCLOCK_SECONDS="0",
              SAVE_FLOAT_WEIGHTS="1", SEED="1", VAL_LOSS_EVERY="0")
RD_MODELS: dict[str, dict[str, str]] = {
    "cpu": dict(_STACK, NUM_LAYERS="5", MODEL_DIM="192", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="3",
                TRAIN_SEQ_LEN="256", TRAIN_BATCH_TOKENS="8192", BIGRAM_DIM="64", WARMDOWN_STEPS="720",
                ITERATIONS="427"),
    "large": dict(_STACK, NUM_LAYERS="6", MODEL_DIM="512", NUM_HEADS="8", NUM_KV_HEADS="4", MLP_MULT="3",
                  TRAIN_SEQ_LEN="512", TRAIN_BATCH_TOKENS="4096", BIGRAM_DIM="128", WARMDOWN_STEPS="140",
                  ITERATIONS="200"),
}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_model(name: str) -> Path:
    """Train model `name` into runs/rate_distortion/<name>/ (the bundled train_gpt.py, as a record
    run launches it) and return the float weights' path."""
    from lila_golf.tools.demo import launch_run
    run_dir = RD_RUNS / name
    if (run_dir / "train.log").exists():
        (run_dir / "train.log").unlink()
    env = {"PRESET": "cpu_track", "DATA_PATH": str(MINI), "TOKENIZER_PATH": str(TOKENIZER), **RD_MODELS[name]}
    status = launch_run(run_dir, env)
    if status != 0:
        raise SystemExit(f"training {name} failed with exit status {status}: see {run_dir / 'train.log'}")
    weights = run_dir / "final_weights.lgck"
    print(f"{name}: {weights} sha256:{file_sha256(weights)}")
    return weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=f"models to measure: {sorted(RD_MODELS)}")
    p.add_argument("--train", nargs="*", default=[], choices=sorted(RD_MODELS))
    args = p.parse_args(argv)
    unknown = sorted(set(args.models) - set(RD_MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}: expected some of {sorted(RD_MODELS)}")
    for name in args.train:
        train_model(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
