"""Rate-distortion of weight export: roundtrip bpb gap against whole-model-file bits per parameter,
for the same trained float weights, across the record #1855 method and our schemes.

    python benchmarks/rate_distortion.py --train cpu      # make the CPU-track float weights
    python benchmarks/rate_distortion.py --train large    # make the 6 x d512 float weights (~30 min)
    python benchmarks/rate_distortion.py cpu large        # measure: JSON lines, table, PNG
    python benchmarks/rate_distortion.py --report cpu large   # table + PNG from the JSON lines only

Models (both trained here, fixed seed and fixed step count, so the weights are reproducible):
    cpu    the CPU-track stack (records/track_cpu_10min: 5 x d192, MLP 3x, seq 256), 427 steps,
           the step count of the record's seed 1 in 600 s, same lr schedule (untimed)
    large  6 layers, d 512, 8 heads / 4 KV heads, MLP 3x, seq 512, the same techniques, 200 steps
           of 4,096 tokens (about 30 minutes on one core of an idle development machine)

Every point: quantise (calibration: 16 training batches from the start of the stream, nothing from
validation), write the artifact to disk, reload it, score every target of the val head (131,071,
exact bytes); gap = roundtrip val_bpb - float val_bpb; bits/param = 8 * file bytes / parameters
(the whole artifact: header, scales, float tensors). Methods:
    record     record #1855's export (lila_golf/research/record1855.py), k_scale and widths swept, and
               (record_emb, the same method) the embedding's k swept on its own
    record_b   the same with the small-tensor rule by bytes (bitalloc.plan_by_bytes): isolates it
    fs         ours: Fisher-shaped steps from the calibrated sensitivities (bitalloc.fisher_plan),
               GPTQ, role streams, per-group best codec; mu swept
    fs_probe   fs with each tensor's sensitivity rescaled by a loss probe (bitalloc.probe_row_weights)
    fs_lqer    fs + H-weighted LQER rank 4 on the 3 worst tensors
    legacy     the export before issue 18: default plan int{4,5,6}_gptq, rANS
    e8         E8 lattice VQ with GPTQ error feedback (research/latticevq.py) on every matrix fs
               quantises, at fs's row steps; the rest as fs. Not an artifact scheme: bytes = the
               rest's artifact + rANS of the E8 symbols + fp16 scales + the column orders (lzma);
               roundtrip in memory
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "fineweb10B_sp1024_mini"
TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
RD_RUNS = REPO / "runs" / "rate_distortion"
RD_RESULTS = REPO / "benchmarks" / "results" / "rate_distortion.jsonl"
RD_PNG = REPO / "benchmarks" / "rate_distortion.png"

_STACK = dict(ACTIVATION="leaky_relu2", BIGRAM_HASH_BUCKETS="2048", SMEAR_GATE="1", XSA_LAST_N="2",
              LN_SCALE="1", ROPE_DIMS="16", WARMUP_STEPS="10", MATRIX_LR="0.06", SCALAR_LR="0.06",
              EMBED_LR="0.08", EMA_DECAY="0", GRAD_ACCUM_TOTAL="1", MAX_WALLCLOCK_SECONDS="0",
              SAVE_FLOAT_WEIGHTS="1", SEED="1", VAL_LOSS_EVERY="0",
              # only the float weights are used here: the run ends with the plain score, not the
              # preset's submitted evaluation (TTT on a d512 model would take longer than training)
              EVAL_STRIDE="0", TTT_MODE="off", NGRAM_ORDER="0",
              # the step-count warmdown below, not the preset's clock share (set after these weights were made)
              WARMDOWN_FRAC="0")
RD_MODELS: dict[str, dict[str, str]] = {
    "cpu": dict(_STACK, NUM_LAYERS="5", MODEL_DIM="192", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="3",
                TRAIN_SEQ_LEN="256", TRAIN_BATCH_TOKENS="8192", BIGRAM_DIM="64", WARMDOWN_STEPS="720",
                ITERATIONS="427"),
    # the d192 stack's learning rates diverged at d512 / 4,096 tokens a step (train loss 6.0 at
    # step 50, up from 5.3 at step 25): the defaults 0.04 / 0.05 / 0.04 and a longer warmup instead
    "large": dict(_STACK, NUM_LAYERS="6", MODEL_DIM="512", NUM_HEADS="8", NUM_KV_HEADS="4", MLP_MULT="3",
                  TRAIN_SEQ_LEN="512", TRAIN_BATCH_TOKENS="4096", BIGRAM_DIM="128", WARMDOWN_STEPS="140",
                  ITERATIONS="200", MATRIX_LR="0.04", SCALAR_LR="0.04", EMBED_LR="0.05", WARMUP_STEPS="20",
                  TRAIN_LOG_EVERY="5"),
}
# record sweep: (matrix bits, k_scale, embed bits); the record's own setting is (6, 1.0, 7)
RECORD_GRID = [(5, f, 7) for f in (0.5, 0.7, 1.0)] + [(6, f, 7) for f in (0.35, 0.5, 0.7, 1.0, 1.4, 2.0)] \
    + [(6, f, 8) for f in (0.5, 1.0)] + [(7, f, 7) for f in (0.5, 1.0, 1.4, 2.0)] + [(8, f, 8) for f in (1.0, 2.0)]
RECORD_GRID_LARGE = [(4, 0.5, 7), (4, 0.7, 7), (5, 0.5, 7), (5, 0.7, 7), (5, 1.0, 7), (6, 0.5, 7), (6, 0.7, 7), (6, 1.0, 7), (6, 1.4, 7), (7, 1.0, 7), (7, 2.0, 7), (8, 2.0, 8)]
# the embedding's k on its own (the record's k per role, swept per role): the reference at its best
RECORD_EMB_GRID = [(6, f, 8, e) for f in (1.0, 1.4, 2.0) for e in (0.25, 0.35, 0.5)]
RECORD_EMB_GRID_LARGE = [(6, f, 8, e) for f in (1.0, 1.4) for e in (0.35, 0.5)]
RECORD_B_GRID = [(6, f, 7) for f in (0.5, 1.0, 2.0)] + [(6, f, 8, e) for f in (1.0, 2.0) for e in (0.25, 0.5)]
FS_BITS = (1.8, 2.2, 2.6, 3.0, 3.7, 4.5, 5.5)  # target whole-model bits/param of the fs sweep (estimated)
FS_BITS_LARGE = (1.0, 1.2, 1.4, 1.8, 2.2, 2.6, 3.0)  # at 1.8 bits the gap is already under every record point's
LEGACY_BITS = (4, 5, 6)
TOK = None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_model(name: str) -> Path:
    """Train model `name` into runs/rate_distortion/<name>/ (the bundled train_gpt.py, as a record
    run launches it) and return the float weights' path."""
    from lila_golf.tools.demo import launch_run
    run_dir = RD_RUNS / name
    resume = (run_dir / "checkpoint.lgck").exists()
    if (run_dir / "train.log").exists() and not resume:
        (run_dir / "train.log").unlink()
    # a checkpoint every 10 steps: a killed run resumes where it stopped
    env = {"PRESET": "cpu_track", "DATA_PATH": str(MINI), "TOKENIZER_PATH": str(TOKENIZER), **RD_MODELS[name],
           "CHECKPOINT_EVERY": "10", "RESUME": "1" if resume else "0"}
    status = launch_run(run_dir, env)
    if status != 0:
        raise SystemExit(f"training {name} failed with exit status {status}: see {run_dir / 'train.log'}")
    weights = run_dir / "final_weights.lgck"
    print(f"{name}: {weights} sha256:{file_sha256(weights)}")
    return weights


class Bench:
    """One model's float weights, val head, calibration, and the measuring of export points."""

    def __init__(self, name: str, calib_batches: int, out: Path):
        from lila_golf.core.checkpoint import load_checkpoint
        from lila_golf.core.config import Hyperparameters
        from lila_golf.core.data import build_byte_tables, load_tokenizer, tokenizer_sha256
        from lila_golf.core.model import GPT, GPTConfig
        from lila_golf.core.train import load_validation
        run_dir = RD_RUNS / name
        weights = run_dir / "final_weights.lgck"
        if not weights.exists():
            raise SystemExit(f"{weights} is missing: make it with --train {name}")
        self.name, self.out, self.weights_sha = name, out, file_sha256(weights)
        self.hp = Hyperparameters(**json.loads((run_dir / "config.json").read_text()))
        self.state, meta = load_checkpoint(str(weights))
        self.model_config = meta["model_config"]
        self.model = GPT(GPTConfig(**self.model_config))
        self.model.load_state_dict(self.state)
        self.params = sum(t.numel() for t in self.state.values())
        self.tok_sha = tokenizer_sha256(self.hp.tokenizer_path)
        self.val = load_validation(self.hp, build_byte_tables(load_tokenizer(self.hp.tokenizer_path), self.hp.vocab_size), print)
        self.float = self.score(self.state)
        t0 = time.perf_counter()
        self.hessians, self.row_weights = self.calibrate(calib_batches)
        self.calib_s = time.perf_counter() - t0
        print(f"{name}: params {self.params} float val_bpb {self.float['val_bpb']:.6f} calib {self.calib_s:.1f}s "
              f"weights sha256 {self.weights_sha}", flush=True)

    def calibrate(self, n: int):
        from lila_golf.core.bitalloc import calibrate
        from lila_golf.core.data import DistributedTokenLoader, shard_file
        loader = DistributedTokenLoader(shard_file(self.hp.data_path, "train"), 0, 1, self.hp.vocab_size)
        self.batches = [loader.next_batch(self.hp.train_batch_tokens, self.hp.train_seq_len, 1) for _ in range(n)]
        return calibrate(self.model, self.batches)

    def probed_row_weights(self, target_bits: float) -> dict:
        """Row weights corrected by the loss probe (bitalloc.probe_row_weights) on 4 of the
        calibration batches, at the plan for target_bits; cached."""
        from lila_golf.core.bitalloc import fisher_plan, probe_row_weights
        if getattr(self, "_probed", None) is None:
            t0 = time.perf_counter()
            plan = fisher_plan(self.state, self.hessians, self.row_weights, fs_mu_for_bits(self, target_bits))
            self._probed = probe_row_weights(self.model, self.batches[:4], self.hessians, self.row_weights, plan)
            self.probe_s = time.perf_counter() - t0
            print(f"{self.name}: probe {self.probe_s:.0f}s factors " + " ".join(
                f"{n}:{float(self._probed[n].sum() / self.row_weights[n].sum()):.2f}"
                for n in self._probed if float(self.row_weights[n].sum()) > 0), flush=True)
        return self._probed

    def done(self, method: str, params: dict) -> bool:
        """A point of these weights with these settings is already in the results (a rerun adds
        only the missing points)."""
        if getattr(self, "_earlier", None) is None:  # read once: only rows from before this run count
            lines = self.out.read_text().splitlines() if self.out.exists() else []
            self._earlier = [r for r in map(json.loads, filter(str.strip, lines))
                             if r.get("weights_sha256") == self.weights_sha]
        return any(r.get("method") == method and all(r.get("params", {}).get(k) == v for k, v in params.items())
                   for r in self._earlier)

    def score(self, state: dict) -> dict:
        from lila_golf.core.evaluate import eval_val_plain
        from lila_golf.core.model import GPT, GPTConfig
        model = GPT(GPTConfig(**self.model_config))
        model.load_state_dict(state)
        return eval_val_plain(model, self.val["tokens"], self.val["bytes"], self.hp.train_seq_len,
                              torch.device("cpu"), batch_seqs=max(1, 32768 // self.hp.train_seq_len))

    def point(self, method: str, params: dict, entries: dict, codec: str, streams: str, quant_s: float) -> dict:
        """Write entries as an artifact, reload from disk, score; one result row."""
        from lila_golf.core.artifact import load_artifact, read_artifact_header, save_artifact
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.lgz"
            t0 = time.perf_counter()
            nbytes = save_artifact(path, self.state, model_config=self.model_config, tokenizer_sha256=self.tok_sha,
                                   codec=codec, streams=streams, entries=entries)
            encode_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            state, _ = load_artifact(path, tokenizer_sha256=self.tok_sha)
            decode_s = time.perf_counter() - t0
            head = read_artifact_header(path)
        groups = {g["name"]: [g["codec"], g["length"]] for g in head["groups"]}
        return self.row(method, params, nbytes, self.score(state), quant_s, encode_s, decode_s, groups=groups)

    def row(self, method, params, nbytes, res, quant_s, encode_s, decode_s, **extra) -> dict:
        r = dict(model=self.name, method=method, params=params, bytes=nbytes, bits_per_param=8 * nbytes / self.params,
                 val_bpb=res["val_bpb"], val_loss=res["val_loss"], gap=res["val_bpb"] - self.float["val_bpb"],
                 float_val_bpb=self.float["val_bpb"], tokens=res["tokens"], num_params=self.params,
                 quant_s=quant_s, encode_s=encode_s, decode_s=decode_s, calib_s=self.calib_s,
                 weights_sha256=self.weights_sha, load_avg=os.getloadavg()[0],
                 max_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, **extra)
        print(f"{self.name} {method:9s} {json.dumps(params):44s} {8 * nbytes / self.params:6.3f} bits/param "
              f"gap {r['gap']:+.5f} ({nbytes} B, quant {quant_s:.0f}s enc {encode_s:.1f}s dec {decode_s:.1f}s)", flush=True)
        with open(self.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        return r


def run_record(b: Bench, grid, bytes_rule: bool) -> None:
    """grid: (bits, k_scale, embed_bits) or (bits, k_scale, embed_bits, embed_k_scale)."""
    from lila_golf.research.record1855 import record_entries
    from lila_golf.core.bitalloc import plan_by_bytes
    small = (lambda n, w: plan_by_bytes(n, w, "x")) if bytes_rule else None
    for bits, k_scale, embed_bits, *embed_k in grid:
        params = {"bits": bits, "k_scale": k_scale, "embed_bits": embed_bits, **({"embed_k_scale": embed_k[0]} if embed_k else {})}
        if b.done("record_b" if bytes_rule else "record", params):
            continue
        t0 = time.perf_counter()
        entries = record_entries(b.state, b.hessians, k_scale=k_scale, bits=bits, embed_bits=embed_bits, small_rule=small,
                                 embed_k_scale=embed_k[0] if embed_k else None)
        b.point("record_b" if bytes_rule else "record", params, entries, "brotli", "role", time.perf_counter() - t0)


def fs_mu_for_bits(b: Bench, target_bits: float, row_weights: dict | None = None) -> float:
    """mu whose fisher_plan is estimated (bitalloc.estimate_bytes) at target_bits per parameter."""
    from lila_golf.core.bitalloc import _bitalloc_bisect, estimate_bytes, fisher_plan
    budget = target_bits * b.params / 8
    rw = b.row_weights if row_weights is None else row_weights

    def fits(log_mu):
        plan = fisher_plan(b.state, b.hessians, rw, math.exp(log_mu))
        return estimate_bytes(b.state, plan, rw) <= budget
    return math.exp(_bitalloc_bisect(fits, math.log(1e-14), math.log(1e4), steps=25))


def fs_entries(b: Bench, mu: float, lqer: int = 0, row_weights: dict | None = None) -> dict:
    from lila_golf.core.artifact import quantize_state
    from lila_golf.core.bitalloc import fisher_plan
    from lila_golf.research.record1855 import worst_tensors
    from lila_golf.core.quant import quantize_tensor
    rw = b.row_weights if row_weights is None else row_weights
    plan = fisher_plan(b.state, b.hessians, rw, mu)
    entries = quantize_state(b.state, "int6_gptq", b.hessians, plan, row_weights=rw)
    for name in worst_tensors(b.state, entries, b.hessians, lqer):
        entries[name] = quantize_tensor(b.state[name], entries[name]["scheme"] + "+hlqer4", H=b.hessians.get(name),
                                        row_weight=rw.get(name))
    return entries


def run_fs(b: Bench, bits_list, lqer: int, probe: bool = False) -> None:
    method = "fs_probe" if probe else "fs_lqer" if lqer else "fs"
    for target in bits_list:
        if b.done(method, {"target_bits": target}):
            continue
        t0 = time.perf_counter()
        rw = b.probed_row_weights(3.0) if probe else None
        mu = fs_mu_for_bits(b, target, rw)
        entries = fs_entries(b, mu, lqer, rw)
        b.point(method, {"target_bits": target, "mu": mu}, entries, "best", "role", time.perf_counter() - t0)


def run_legacy(b: Bench) -> None:
    from lila_golf.core.artifact import quantize_state
    for bits in LEGACY_BITS:
        if b.done("legacy", {"scheme": f"int{bits}_gptq"}):
            continue
        t0 = time.perf_counter()
        entries = quantize_state(b.state, f"int{bits}_gptq", b.hessians)
        b.point("legacy", {"scheme": f"int{bits}_gptq"}, entries, "rans", "bits", time.perf_counter() - t0)


def run_e8(b: Bench, bits_list) -> None:
    """E8 + GPTQ feedback on every 2-D tensor fs quantises with cols % 8 == 0, at fs's row steps."""
    from lila_golf.core.artifact import quantize_state, save_artifact
    from lila_golf.core.bitalloc import fisher_plan
    from lila_golf.core.codec import rans_encode
    from lila_golf.core.quant import dequantize_tensor, parse_spec, quant_k_scale
    from lila_golf.research.latticevq import e8_gptq_dequantize, e8_gptq_quantize
    for target in bits_list:
        if b.done("e8", {"target_bits": target}):
            continue
        t0 = time.perf_counter()
        plan = fisher_plan(b.state, b.hessians, b.row_weights, fs_mu_for_bits(b, target))
        lattice = [n for n, s in plan.items() if s.startswith("int") and b.state[n].ndim == 2 and b.state[n].shape[1] % 8 == 0]
        rest = {n: w for n, w in b.state.items() if n not in lattice}
        entries = quantize_state(rest, "int6_gptq", b.hessians, {n: plan[n] for n in rest}, row_weights=b.row_weights)
        state = {n: dequantize_tensor(e) for n, e in entries.items()}
        ints, cosets, side = [], [], []
        for n in lattice:
            w = b.state[n].float()
            H = b.hessians.get(n, torch.eye(w.shape[1]))
            step = quant_k_scale(w, parse_spec(plan[n]), b.row_weights.get(n)).float()
            q = e8_gptq_quantize(w, H, 1.0, row_scale=step)
            state[n] = e8_gptq_dequantize(q)
            ints.append(q["symbols"][0]), cosets.append(q["symbols"][1].astype(np.int64))
            side.append(q["scale"].numpy().tobytes() + q["perm"].numpy().astype(np.uint16).tobytes())
        quant_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rest_bytes = save_artifact(Path(tmp) / "rest", rest, model_config=b.model_config, tokenizer_sha256=b.tok_sha,
                                       codec="best", streams="role", entries=entries)
            lattice_bytes = len(rans_encode(ints)) + len(rans_encode(cosets)) + len(lzma.compress(b"".join(side)))
            encode_s = time.perf_counter() - t0
        b.row("e8", {"target_bits": target, "lattice_tensors": len(lattice)}, rest_bytes + lattice_bytes,
              b.score(state), quant_s, encode_s, 0.0, lattice_bytes=lattice_bytes)


def nn_row_order(q: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour chain over the rows of a symbol matrix (L1 distance), from row 0."""
    q = q.astype(np.int16)
    left, order = np.ones(len(q), bool), [0]
    left[0] = False
    for _ in range(len(q) - 1):
        d = np.abs(q[left] - q[order[-1]]).sum(1)
        nxt = np.flatnonzero(left)[int(d.argmin())]
        order.append(nxt)
        left[nxt] = False
    return np.array(order)


def run_coding(b: Bench, label: str, entries: dict, out: Path) -> None:
    """The same quantised symbols coded every way: groups by width or by role, each codec, the best
    per group, and brotli after reordering the rows of every matrix by nearest neighbour (the row
    order stored as u16: 2 bytes a row). Bytes and encode/decode seconds of the symbol groups."""
    from lila_golf.core.artifact import _artifact_encode_group, _artifact_layout
    from lila_golf.core.codec import decompress, rans_decode
    res = {"model": b.name, "method": "coding", "label": label, "load_avg": os.getloadavg()[0]}
    for streams in ("bits", "role"):
        _, groups = _artifact_layout(entries, streams)
        sym = {g: a for g, a in groups.items() if g.startswith("sym")}
        for codec in ("brotli", "lzma", "zstd", "rans", "best"):
            t0 = time.perf_counter()
            blobs = {g: _artifact_encode_group(g, a, codec) for g, a in sym.items()}
            enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            for blob, used in blobs.values():
                rans_decode(blob) if used == "rans" else decompress(blob, used)
            res[f"{streams}/{codec}"] = [sum(len(x[0]) for x in blobs.values()), round(enc, 2), round(time.perf_counter() - t0, 2)]
    _, groups = _artifact_layout(entries, "role")
    total = 0
    for g, arrays in groups.items():
        if g.startswith("sym"):
            for a in arrays:
                m = a.reshape(a.shape[0], -1)
                perm = nn_row_order(m) if m.shape[0] > 1 else np.arange(m.shape[0])
                total += 2 * m.shape[0]
                a[...] = m[perm].reshape(a.shape)
            total += len(_artifact_encode_group(g, arrays, "brotli")[0])
    res["role/brotli+nn_rows"] = [total, None, None]
    print(json.dumps(res), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(res) + "\n")


def run_coding_pair(b: Bench, out: Path) -> None:
    from lila_golf.research.record1855 import record_entries
    run_coding(b, "record bits 6 k_scale 1", record_entries(b.state, b.hessians), out)
    run_coding(b, "fs at ~3.5 bits/param", fs_entries(b, fs_mu_for_bits(b, 3.5)), out)


def pareto(rows) -> list[tuple[float, float]]:
    """(bytes, gap) of the points no other point beats in both, sorted by bytes."""
    pts = sorted((r["bytes"], r["gap"]) for r in rows)
    front, best = [], math.inf
    for nbytes, gap in pts:
        if gap < best:
            front.append((nbytes, gap))
            best = gap
    return front


def bytes_at_gap(front, gap: float) -> float | None:
    """Bytes a front needs for `gap`, linear in log(gap) between its points; None outside it."""
    for (b0, g0), (b1, g1) in zip(front, front[1:]):
        if g1 <= gap <= g0 and g0 > 0 and g1 > 0:
            t = (math.log(g0) - math.log(gap)) / (math.log(g0) - math.log(g1)) if g0 != g1 else 0.0
            return b0 + t * (b1 - b0)
    return None


def report(rows: list[dict], models) -> None:
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        print(f"\n{model}: {mine[0]['num_params']} params, float val_bpb {mine[0]['float_val_bpb']:.5f}")
        print(f"{'method':10s}{'params':>48s}{'bits/param':>11s}{'gap':>10s}{'bytes':>11s}")
        for r in (r for r in mine if r["method"] == "coding"):
            print(f"coding of {r['label']}: symbol bytes [bytes, encode s, decode s]: " +
                  ", ".join(f"{k} {v}" for k, v in r.items() if "/" in k))
        mine = [r for r in mine if r["method"] != "coding"]
        for r in sorted(mine, key=lambda r: (r["method"], r["bytes"])):
            print(f"{r['method']:10s}{json.dumps(r['params'])[:47]:>48s}{r['bits_per_param']:11.3f}{r['gap']:+10.5f}{r['bytes']:11d}")
        fronts = {m: pareto([r for r in mine if r["method"] == m]) for m in sorted({r["method"] for r in mine})}
        print("ratio of bytes to the record's at the record's Pareto points (equal gap, interpolated; '<=': "
              "the method's front does not reach that gap from below, so its fewest bytes at a gap no worse):")
        for nbytes, gap in fronts.get("record", []):
            cells = []
            for m, f in fronts.items():
                v = bytes_at_gap(f, gap) if m != "record" else None
                no_worse = [b for b, g in f if g <= gap]
                if v is not None:
                    cells.append(f"{m} {v / nbytes:.3f}")
                elif m != "record" and no_worse:
                    cells.append(f"{m} <={min(no_worse) / nbytes:.3f}")
            print(f"  gap {gap:+.5f} record {nbytes:9d} B  " + "  ".join(cells))


def plot(rows: list[dict], models, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = [m for m in models if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    methods = sorted({r["method"] for r in rows if r["model"] in models and r["method"] != "coding"})
    colour = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour a method in every panel
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model and r["method"] != "coding"]
        for method in sorted({r["method"] for r in mine}):
            pts = sorted((r["bits_per_param"], r["gap"]) for r in mine if r["method"] == method)
            front = [p for p in pts if not any(q[0] <= p[0] and q[1] < p[1] for q in pts)]  # the Pareto front
            line, = ax.plot([p[0] for p in front], [max(p[1], 1e-5) for p in front], "o-", label=method, ms=4,
                            color=colour[method])
            rest = [p for p in pts if p not in front]  # dominated settings: dots only
            ax.plot([p[0] for p in rest], [max(p[1], 1e-5) for p in rest], ".", color=line.get_color(), alpha=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("whole-model-file bits per parameter")
        ax.set_ylabel("roundtrip val_bpb gap vs float (log)")
        ax.set_title(f"{model}: {mine[0]['num_params'] / 1e6:.2f}M params, float {mine[0]['float_val_bpb']:.4f} bpb")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help=f"models to measure: {sorted(RD_MODELS)}")
    p.add_argument("--train", nargs="*", default=[], help="train these models' float weights first")
    p.add_argument("--methods", nargs="*", default=["fs", "record", "record_emb", "fs_probe", "record_b", "legacy",
                                                    "fs_lqer", "e8", "coding"])
    p.add_argument("--calib-batches", type=int, default=16)
    p.add_argument("--results", type=Path, default=RD_RESULTS)
    p.add_argument("--report", action="store_true", help="only print the table and draw the PNG")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models + args.train) - set(RD_MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}: expected some of {sorted(RD_MODELS)}")
    for name in args.train:
        train_model(name)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for name in args.models:
            b = Bench(name, args.calib_batches, args.results)
            large = name == "large"
            fs_bits = FS_BITS_LARGE if large else FS_BITS
            runners = {"record": lambda: run_record(b, RECORD_GRID_LARGE if large else RECORD_GRID, False),
                       "record_b": lambda: run_record(b, RECORD_B_GRID, True),
                       "record_emb": lambda: run_record(b, RECORD_EMB_GRID_LARGE if large else RECORD_EMB_GRID, False),
                       "fs": lambda: run_fs(b, fs_bits, 0), "fs_lqer": lambda: run_fs(b, fs_bits[1:4], 3),
                       "fs_probe": lambda: run_fs(b, fs_bits, 0, probe=True),
                       "legacy": lambda: run_legacy(b), "e8": lambda: run_e8(b, fs_bits[1:5]),
                       "coding": lambda: run_coding_pair(b, args.results)}
            for method in args.methods:
                runners[method]()
    if args.models and args.results.exists():
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        report(rows, args.models)
        plot(rows, args.models, RD_PNG)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
