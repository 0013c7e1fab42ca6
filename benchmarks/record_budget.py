"""The `record` preset's budget: parameter count, projected artifact bytes, and steps in 600 s on 8xH100.

    python benchmarks/record_budget.py                          # the preset's own export (int6 GPTQ, brotli)
    python benchmarks/record_budget.py --scheme int6_lite --mfu 0.30 --gptq-reserve-s 10

1. Parameters: the GPT the preset builds, counted.
2. Artifact bytes: the project's export (lila_golf.core.artifact.save_artifact with the preset's
   quantisation and codec) run on a model of exactly the preset's shape, plus the record file's code
   bytes (`bundle --preset record --pack --minify`, what a record submits). No trained 8xH100
   weights exist here, so the weights are the initial ones with every matrix dense: the output
   projections, zero at init (their symbols would code to almost nothing and flatter the size), get
   the orthogonal init of the others (--init-only keeps the zeros). Trained weights with weight
   decay and outlier clipping code smaller than dense Gaussian-like rows, so this is an upper-side
   projection. GPTQ is calibrated on real FineWeb text (the shared docs, encoded the preset's way:
   CaseOps with the CaseOps tokenizer when present, else random ids, said so).
3. Step budget: training FLOPs per token = 3 x forward, forward = 2 x (matmul weights a token passes
   through, virtual layers included) + attention 2 x 2 x (seq_len / 2) x d per virtual layer (QK^T and
   AV over the mean causal context) + the tied head. At --peak-tflops per GPU x 8 x --mfu, the
   600 s minus --gptq-reserve-s split into the part before the loop switches on (LOOP_ENABLE_AT
   of the clock; 11 layers) and after (17 virtual layers).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lila_golf.core.artifact import read_artifact_header, save_artifact  # noqa: E402
from lila_golf.core.config import ARTIFACT_LIMIT_BYTES, GPTConfig, Hyperparameters, artifact_model_config  # noqa: E402
from lila_golf.core.model import GPT, count_params, loop_schedule  # noqa: E402
from lila_golf.core.quant import collect_hessians  # noqa: E402
from lila_golf.tools.bundle import build_bundle, build_file  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASEOPS_TOKENIZER = SHARED / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM dense bf16 tensor-core peak (NVIDIA datasheet)


def flops_per_token(hp, looping: bool) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward)."""
    d, hd = hp.model_dim, hp.model_dim // hp.num_heads
    kv = hp.num_kv_heads * hd
    layer = d * d + 2 * d * kv + d * d + 2 * d * hp.mlp_mult * d  # q, k, v, proj, MLP in and out
    n = len(loop_schedule(hp.num_layers, hp.loop_start, hp.loop_end, hp.num_loops)) if looping and hp.num_loops else hp.num_layers
    attention = 2 * 2 * (hp.train_seq_len / 2) * d  # per token per layer: QK^T and AV over the mean context
    forward = 2 * n * layer + n * attention + 2 * hp.vocab_size * d
    return 3 * forward


def step_budget(hp, peak_tflops: float, mfu: float, gpus: int, reserve_s: float) -> dict:
    rate = peak_tflops * 1e12 * gpus * mfu
    budget_s = hp.max_wallclock_seconds - reserve_s
    ms = {k: 1000 * flops_per_token(hp, k) * hp.train_batch_tokens / rate for k in (False, True)}
    before = hp.loop_enable_at * budget_s if hp.num_loops else budget_s
    steps = before * 1000 / ms[False] + (budget_s - before) * 1000 / ms[True]
    return {"budget_s": budget_s, "ms_per_step_no_loop": ms[False], "ms_per_step_loop": ms[True], "steps": int(steps)}


def calibration_batches(hp, n: int, seq_len: int) -> tuple[list[torch.Tensor], str]:
    """n (1, seq_len) batches of real text the preset's way, or random ids when the data is absent."""
    docs = SHARED / "fineweb_docs" / "verify_docs_200.jsonl"
    if hp.vocab_size == 8192 and CASEOPS_TOKENIZER.is_file() and docs.is_file():
        import sentencepiece as spm
        from lila_golf.tools.caseopsdata import encode_caseops_docs
        sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_TOKENIZER))
        texts = [json.loads(line)["text"] for line in docs.read_text(encoding="utf-8").splitlines()]
        ids = np.concatenate([d for d, _ in encode_caseops_docs(sp, texts)]).astype(np.int64)
        return [torch.from_numpy(ids[i * seq_len:(i + 1) * seq_len])[None] for i in range(n)], "CaseOps-encoded FineWeb docs"
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, hp.vocab_size, (1, seq_len), generator=g) for _ in range(n)], "RANDOM ids (no shared data)"


def export_bytes(hp, scheme: str, codec: str, calib: int, dense: bool = True) -> dict:
    torch.manual_seed(hp.seed)
    model = GPT(GPTConfig.from_hparams(hp))
    for module in model.modules():
        if dense and getattr(module, "_zero_init", False):
            torch.nn.init.orthogonal_(module.weight)
    hessians, source = None, "-"
    t0 = time.perf_counter()
    if scheme.endswith("_gptq"):
        batches, source = calibration_batches(hp, calib, 1024)
        hessians = collect_hessians(model, batches)
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "final_model.lgz"
        save_artifact(path, state, model_config=artifact_model_config(GPTConfig.from_hparams(hp)),
                      tokenizer_sha256="0" * 64, scheme=scheme, codec=codec, hessians=hessians)
        header = read_artifact_header(path)
        size = path.stat().st_size
    return {"params": count_params(model), "bytes_model": size, "calibration": source,
            "sym_coded_bytes": header["sym_coded_bytes"], "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="record")
    p.add_argument("--scheme", default=None, help="quantisation scheme (default: the preset's)")
    p.add_argument("--codec", default=None, help="codec (default: the preset's)")
    p.add_argument("--calibration-batches", type=int, default=4, help="GPTQ calibration batches of 1,024 tokens")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS, help="per-GPU peak (bf16 dense)")
    p.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation assumed")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gptq-reserve-s", type=float, default=10.0, help="seconds of the 600 kept for GPTQ calibration")
    p.add_argument("--observed-steps", type=int, default=None, help="steps a real run made (prints the implied MFU)")
    p.add_argument("--init-only", action="store_true", help="export the init weights as they are (zero projections)")
    args = p.parse_args()
    hp = Hyperparameters.from_env({"PRESET": args.preset})
    scheme, codec = args.scheme or hp.quant_scheme, args.codec or hp.codec
    ex = export_bytes(hp, scheme, codec, args.calibration_batches, dense=not args.init_only)
    code_packed = len(build_file(args.preset, packed=True, minified=True).encode())
    code_readable = len(build_bundle(args.preset).encode())
    total = ex["bytes_model"] + code_packed
    print(f"preset:{args.preset} params:{ex['params']} layers:{hp.num_layers} virtual_layers:"
          f"{len(loop_schedule(hp.num_layers, hp.loop_start, hp.loop_end, hp.num_loops)) if hp.num_loops else hp.num_layers} "
          f"d:{hp.model_dim} vocab:{hp.vocab_size}")
    print(f"export scheme:{scheme} codec:{codec} weights:{'init' if args.init_only else 'init_dense'} calibration:{ex['calibration']} "
          f"bytes_model:{ex['bytes_model']} bits_per_param:{8 * ex['bytes_model'] / ex['params']:.3f} "
          f"export_s:{ex['seconds']:.0f}")
    print(f"bytes_code_packed:{code_packed} bytes_code_readable:{code_readable} bytes_total:{total} "
          f"limit:{ARTIFACT_LIMIT_BYTES} {'fits' if total <= ARTIFACT_LIMIT_BYTES else f'over_by:{total - ARTIFACT_LIMIT_BYTES}'} "
          f"fits_at_bits_per_param:{8 * (ARTIFACT_LIMIT_BYTES - code_packed) / ex['params']:.3f}")
    sb = step_budget(hp, args.peak_tflops, args.mfu, args.gpus, args.gptq_reserve_s)
    print(f"flops_per_token no_loop:{flops_per_token(hp, False) / 1e6:.1f}M loop:{flops_per_token(hp, True) / 1e6:.1f}M "
          f"tokens_per_step:{hp.train_batch_tokens}")
    print(f"step_budget gpus:{args.gpus} peak_tflops:{args.peak_tflops} mfu:{args.mfu} train_s:{sb['budget_s']:.0f} "
          f"ms_per_step:{sb['ms_per_step_no_loop']:.1f}->{sb['ms_per_step_loop']:.1f} (loop on at "
          f"{hp.loop_enable_at:.2f}) steps:{sb['steps']}")
    if args.observed_steps:  # utilisation that FLOP count implies for a run that made this many steps
        print(f"observed_steps:{args.observed_steps} implied_mfu:{args.mfu * args.observed_steps / sb['steps']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
