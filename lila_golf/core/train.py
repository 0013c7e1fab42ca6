"""Training in the challenge's format; `main()` is the entry of the bundled train_gpt.py.

    PRESET=smoke python train_gpt.py
    PRESET=record torchrun --standalone --nproc_per_node=8 train_gpt.py
    DATA_PATH=... TOKENIZER_PATH=... PRESET=test torchrun --standalone --nproc_per_node=2 train_gpt.py

Phases: set-up (config, data, model, optimisers) -> timed loop (wall clock excludes compile warm-up
and validation) -> weight averaging -> export (quantise + code) -> reload from disk -> re-evaluate.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .config import ARTIFACT_LIMIT_BYTES, Hyperparameters, artifact_model_config, dist_env
from .data import DistributedTokenLoader, build_byte_tables, data_source_label, load_tokenizer, load_val_tokens, read_shard, shard_file, shard_paths, tokenizer_sha256, val_target_bytes
from .model import GPT, GPTConfig, count_params
from .optim import EMA, SWA, build_optimizers, lr_scale, muon_momentum_at, seq_len_at, swa_snapshot_due, training_progress, warmdown_scale
from .artifact import load_artifact, read_artifact_header, save_artifact
from .telemetry import weight_telemetry
from .checkpoint import flatten_optimizer_state, parse_checkpoint, save_checkpoint, unflatten_optimizer_state
from .collectives import all_reduce_, barrier, broadcast_bytes, init_distributed, shutdown_distributed
from .bitalloc import allocate, budget_bytes, calibrate
from .export import calibration_batches, calibration_pairs, estimate_gptq_ms, quantize_state_across_ranks, share_artifact, uses_budget, uses_gptq
from .evaluate import eval_val_plain
from .final_eval import final_evaluation
from .quant import collect_hessians, parse_spec



class RunLog:
    """`key:value` lines to stdout and the run's log file, from rank 0 only."""

    def __init__(self, path: str | None, master: bool):
        self.path, self.master = path, master

    def __call__(self, line: str) -> None:
        if not self.master:
            return
        print(line, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def setup_device(denv):
    if torch.cuda.is_available():
        device = torch.device("cuda", denv.local_rank)
        torch.cuda.set_device(device)
        return device, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.device("cpu"), None


def log_environment(log, hp, denv, device, code_bytes: bytes, code_path: str):
    log(f"code_sha256:{hashlib.sha256(code_bytes).hexdigest()} code_path:{os.path.basename(code_path)} bytes_code:{len(code_bytes)}")
    log(f"python:{platform.python_version()} torch:{torch.__version__} numpy:{np.__version__}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    log(f"device:{device.type} device_name:{name.replace(' ', '_')} world_size:{denv.world_size} threads:{torch.get_num_threads()}")
    log("config " + " ".join(f"{k}:{v}" for k, v in hp.as_dict().items()))


def bigram_probs(pattern: str, vocab_size: int, max_tokens: int = 20_000_000) -> torch.Tensor:
    """p(next | prev) from counts over the training shards only (complementary training)."""
    counts = np.zeros(vocab_size * vocab_size, dtype=np.int64)
    seen = 0
    for path in shard_paths(pattern):
        toks = read_shard(path, vocab_size)[: max_tokens - seen].astype(np.int64)
        counts += np.bincount(toks[:-1] * vocab_size + toks[1:], minlength=vocab_size * vocab_size)
        seen += len(toks)
        if seen >= max_tokens:
            break
    counts = counts.reshape(vocab_size, vocab_size).astype(np.float64) + 0.01
    return torch.from_numpy(counts / counts.sum(1, keepdims=True)).float()


def build_model(hp, device) -> GPT:
    return GPT(GPTConfig.from_hparams(hp), weight_init=hp.weight_init).to(device)


def optimizer_kwargs(hp, device) -> dict:
    return dict(matrix_lr=hp.matrix_lr, embed_lr=hp.embed_lr, scalar_lr=hp.scalar_lr,
                muon_momentum=hp.muon_momentum, muon_backend_steps=hp.muon_backend_steps,
                muon_weight_decay=hp.muon_weight_decay, adam_weight_decay=hp.adam_weight_decay,
                beta1=hp.beta1, beta2=hp.beta2, adam_eps=hp.adam_eps, fused=device.type == "cuda",
                muon_ns=hp.muon_ns, muon_row_normalize=hp.muon_row_normalize, embed_beta2=hp.embed_beta2,
                scalar_beta2=hp.scalar_beta2, scalar_weight_decay=hp.scalar_weight_decay)


def micro_batches(grad_accum_total: int, world_size: int) -> int:
    """Micro-batches per rank and step: GRAD_ACCUM_TOTAL shared over the ranks, at least one each.
    The global batch is TRAIN_BATCH_TOKENS at every world size (each rank takes its share)."""
    return max(1, grad_accum_total // world_size)


# fields that may change between a run and its resumption (paths, logging, the stop itself)
RESUME_FREE_FIELDS = {"resume", "stop_at_step", "checkpoint_every", "out_dir", "run_id", "data_path",
                      "tokenizer_path", "val_loss_every", "train_log_every", "telemetry_every",
                      "save_float_weights", "val_max_tokens", "eval_stride", "compile", "compile_warmup_steps"}


def resume_fingerprint(hp, world_size: int) -> dict:
    """What a checkpoint must agree on to be resumed: every training-relevant field and the world size."""
    return {**{k: v for k, v in hp.as_dict().items() if k not in RESUME_FREE_FIELDS}, "world_size": world_size}


def check_resume_config(saved: dict | None, current: dict, path: str) -> None:
    if saved is None:
        raise ValueError(f"{path}: checkpoint has no config fingerprint (made by an older version); cannot check it")
    diff = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if diff:
        detail = ", ".join(f"{k.upper()}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in diff[:5])
        raise ValueError(f"{path} was saved by a different config ({detail}); refusing to resume")


def would_overrun(train_time_ms: float, recent_step_ms: list[float], budget_ms: float) -> bool:
    """The challenge's clock is exact: no step may start that its measured step time (the slowest
    of the recent steps) says would end past budget_ms. budget_ms <= 0 means no cap."""
    if budget_ms <= 0:
        return False
    return train_time_ms + (max(recent_step_ms) if recent_step_ms else 0.0) > budget_ms


class Trainer:
    """One optimiser step = grad_accum micro-batches on each rank; all ranks see one global batch."""

    def __init__(self, hp, denv, device, autocast, model, log):
        self.hp, self.denv, self.device, self.autocast, self.log = hp, denv, device, autocast, log
        self.model = model
        self.micro_steps = micro_batches(hp.grad_accum_total, denv.world_size)
        self.budget_ms = 1000 * hp.max_wallclock_seconds  # training's share of the cap (main sets it)
        # compile the model itself and let DDP wrap the compiled module (DDP inside a fullgraph
        # compile would split the graph at its gradient buckets)
        compiled = torch.compile(model, dynamic=False, fullgraph=True) if hp.compile else model
        self.ddp = DistributedDataParallel(compiled, device_ids=[device.index] if device.type == "cuda" else None) if denv.distributed else None
        self.forward_model = self.ddp or compiled
        self.optimizers = build_optimizers(model, **optimizer_kwargs(hp, device))
        self.ema = EMA(model, hp.ema_decay) if hp.ema_decay > 0 else None
        self.swa = SWA(model) if hp.swa_every > 0 else None
        self.loader = DistributedTokenLoader(shard_file(hp.data_path, "train"), denv.rank, denv.world_size, hp.vocab_size)
        self.looping = not (hp.num_loops and hp.loop_enable_at > 0)
        if not self.looping:
            model.set_looping(False)  # on at LOOP_ENABLE_AT (update_schedule)
        self.bigram = None
        if hp.complement_alpha > 0:
            self.bigram = bigram_probs(shard_file(hp.data_path, "train"), hp.vocab_size).to(device)

    def micro_loss(self, x, y):
        weights = None
        if self.bigram is not None:
            weights = 1.0 - self.hp.complement_alpha * self.bigram[x, y]
        ctx = self.autocast() if self.autocast else contextlib.nullcontext()
        with ctx:
            # through the (DDP/compiled) wrapper: DDP only syncs gradients of its own forward
            return self.forward_model(x, y, weights)

    def update_schedule(self, step: int, progress: float) -> int:
        """Depth recurrence on at LOOP_ENABLE_AT; returns this step's sequence length."""
        if not self.looping and progress >= self.hp.loop_enable_at:
            self.model.set_looping(True)
            self.looping = True
            self.log(f"looping:on step:{step} progress:{progress:.4f} schedule:{','.join(map(str, self.model.schedule))}")
        seq_len = seq_len_at(progress, self.hp.seq_len_start, self.hp.train_seq_len, self.hp.seq_len_warmup_frac)
        if self.hp.seq_len_start and seq_len != getattr(self, "seq_len", 0):
            self.seq_len = seq_len
            self.log(f"seq_len:{seq_len} step:{step} progress:{progress:.4f}")
        return seq_len

    def step(self, step: int, elapsed_ms: float, seq_len: int | None = None) -> float:
        hp = self.hp
        seq_len = seq_len or self.update_schedule(step, training_progress(step, elapsed_ms, hp.iterations, self.budget_ms))
        total = 0.0
        for micro in range(self.micro_steps):
            x, y = self.loader.next_batch(hp.train_batch_tokens, seq_len, self.micro_steps)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            sync = self.ddp is None or micro == self.micro_steps - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss = self.micro_loss(x, y) / self.micro_steps
                loss.backward()
            total += float(loss.detach())
        scale = lr_scale(step, elapsed_ms, warmup_steps=hp.warmup_steps, warmdown_steps=hp.warmdown_steps,
                         iterations=hp.iterations, max_wallclock_ms=self.budget_ms, warmdown_frac=hp.warmdown_frac,
                         min_lr=hp.min_lr)
        momentum = muon_momentum_at(step, start=hp.muon_momentum_warmup_start, end=hp.muon_momentum,
                                    warmup_steps=hp.muon_momentum_warmup_steps)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
                if "momentum" in group:
                    group["momentum"] = momentum
        if hp.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        if self.swa is not None:
            warmdown = warmdown_scale(step, elapsed_ms, warmdown_steps=hp.warmdown_steps, iterations=hp.iterations,
                                      max_wallclock_ms=self.budget_ms, warmdown_frac=hp.warmdown_frac, min_lr=hp.min_lr)
            if swa_snapshot_due(step, hp.swa_every, hp.warmup_steps, warmdown):
                self.swa.add(self.model)
        return self.global_mean(total)

    def global_mean(self, value: float) -> float:
        if not self.denv.distributed:
            return value
        return float(all_reduce_(torch.tensor([value], dtype=torch.float64))) / self.denv.world_size

    # --- checkpoints (no pickle) ---
    def save(self, path: str, step: int, train_time_ms: float) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta = {"step": step, "train_time_ms": train_time_ms, "loader": self.loader.state_dict(),
                "config": resume_fingerprint(self.hp, self.denv.world_size),
                "optimizers": [flatten_optimizer_state(f"opt{i}", o.state_dict(), tensors) for i, o in enumerate(self.optimizers)]}
        for name, avg in (("ema", self.ema), ("swa", self.swa)):
            if avg is not None:  # flat {key: tensor} states
                tensors.update({f"{name}/{k}": v for k, v in avg.state_dict().items()})
        save_checkpoint(path, tensors, meta)

    def load(self, path: str, data: bytes) -> tuple[int, float]:
        tensors, meta = parse_checkpoint(data, path)
        check_resume_config(meta.get("config"), resume_fingerprint(self.hp, self.denv.world_size), path)
        self.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        for opt, flat in zip(self.optimizers, meta["optimizers"]):
            state = unflatten_optimizer_state(flat, tensors)
            for pstate in state["state"].values():
                for k, v in pstate.items():
                    if torch.is_tensor(v):
                        pstate[k] = v.to(self.device)
            opt.load_state_dict(state)
        for name, avg in (("ema", self.ema), ("swa", self.swa)):
            if avg is not None:
                prefix = f"{name}/"
                avg.load_state_dict({k[len(prefix):]: v.to(self.device) for k, v in tensors.items() if k.startswith(prefix)})
        self.loader.load_state_dict(meta["loader"])
        return meta["step"], meta["train_time_ms"]


def compile_warmup(trainer: Trainer, steps: int) -> None:
    """Run a few steps to compile, then restore the initial weights, optimisers and data position
    (the challenge does not count compilation as training)."""
    model_state = copy.deepcopy(trainer.model.state_dict())
    opt_states = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
    loader_state, looping_state = trainer.loader.state_dict(), trainer.looping
    hp = trainer.hp
    for step in range(steps):  # at the first graph: the schedule (loop switch, lengths) does not move here
        trainer.step(step, 0.0, seq_len_at(0.0, hp.seq_len_start, hp.train_seq_len, hp.seq_len_warmup_frac))
    for looping, seq_len in warmup_variants(trainer.hp):  # every other graph the run will use
        trainer.model.set_looping(looping)
        for step in range(2):
            trainer.step(step, 0.0, seq_len)
    trainer.looping = looping_state
    trainer.model.set_looping(looping_state)
    trainer.model.load_state_dict(model_state)
    for opt, state in zip(trainer.optimizers, opt_states):
        opt.load_state_dict(state)
    trainer.loader.load_state_dict(loader_state)
    if trainer.ema is not None:
        trainer.ema = EMA(trainer.model, trainer.hp.ema_decay)
    if trainer.swa is not None:  # snapshots of the warm-up steps are not of the trained model
        trainer.swa = SWA(trainer.model)


def warmup_variants(hp) -> list[tuple[bool, int]]:
    """(looping, seq_len) of the other graphs a run meets, compiled before the clock starts."""
    loops = [False, True] if hp.num_loops and hp.loop_enable_at > 0 else [bool(hp.num_loops)]
    lengths = sorted({seq_len_at(k / 64, hp.seq_len_start, hp.train_seq_len, hp.seq_len_warmup_frac) for k in range(65)})
    first = (loops[0], lengths[0])
    return [(lp, n) for lp in loops for n in lengths if (lp, n) != first]


def run_validation(model, val, hp, device, autocast, denv):
    return eval_val_plain(model, val["tokens"], val["bytes"], hp.train_seq_len, device,
                          batch_seqs=max(1, hp.val_batch_tokens // hp.train_seq_len),
                          rank=denv.rank, world_size=denv.world_size, autocast=autocast)


def load_validation(hp, sp_tables, log) -> dict:
    tokens = load_val_tokens(shard_file(hp.data_path, "val"), hp.vocab_size)
    if hp.val_max_tokens and hp.val_max_tokens + 1 < len(tokens):
        tokens = tokens[: hp.val_max_tokens + 1]
        log(f"val_subset:first_{hp.val_max_tokens}_targets (NOT the full val set)")
    tokens = np.asarray(tokens, dtype=np.int64)
    n_bytes = val_target_bytes(tokens, sp_tables, shard_file(hp.data_path, "val"))
    if sp_tables.sidecar_required:
        log("val_bytes:sidecar (CaseOps tokenizer: bytes of the original text)")
    return {"tokens": tokens, "bytes": n_bytes, "tables": sp_tables}


def float_cpu_state(model) -> dict:
    """The model's weights as float32 CPU tensors: what every export step reads."""
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def calibrate_and_quantize(model, state, hp, device, log) -> tuple[dict, float]:
    """GPTQ calibration (training batches) + the solve of `state` (the model's float CPU weights),
    split across ranks; inside the clock. Returns (quantize_state entries, gptq_time_ms); without
    GPTQ the plain quantisation, untimed."""
    t0 = time.perf_counter()
    hessians = collect_hessians(model, calibration_batches(hp, device)) if uses_gptq(hp) else None
    entries = quantize_state_across_ranks(state, hp.quant_scheme, hessians, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    gptq_ms = 1000 * (time.perf_counter() - t0) if uses_gptq(hp) else 0.0
    if hessians is not None:
        log(f"gptq_time_ms:{gptq_ms:.0f} hessians:{len(hessians)} calib_batches:{hp.gptq_calib_batches}")
    return entries, gptq_ms


def export_under_budget(model, state, hp, device, log, code_len: int, write) -> float:
    """QUANT_BUDGET_BYTES: bits, clip and row shape per tensor from measured sensitivities on training
    batches (bitalloc.calibrate), exported until the artifact lands just under the budget
    (bitalloc.allocate); calibration, solves and coding all inside the clock. write(entries) writes
    the artifact and returns its bytes (the same on every rank). Returns the milliseconds taken."""
    budget = hp.quant_budget_bytes if hp.quant_budget_bytes > 0 else budget_bytes(code_len, hp.quant_budget_margin)
    t0 = time.perf_counter()
    hessians, row_weights = calibrate(model, calibration_pairs(hp, device))
    rounds = []

    def export(plan):
        rounds.append(write(quantize_state_across_ranks(state, hp.quant_scheme, hessians, device, plan, row_weights)))
        return rounds[-1]

    plan, chosen = allocate(state, hessians, row_weights, budget, export)
    ms = 1000 * (time.perf_counter() - t0)
    specs = [parse_spec(scheme) for scheme in plan.values()]
    widths = sorted({spec["bits"] for spec in specs if spec["kind"] not in ("float", "raw")})
    log(f"quant_budget budget_bytes:{budget} model_bytes:{chosen} exports:{','.join(map(str, rounds))} "
        f"widths:{','.join(map(str, widths))} gptq_time_ms:{ms:.0f}")
    return ms


def log_time_budget(log, hp, train_time_ms: float, gptq_ms: float) -> bool:
    """train + GPTQ against the cap; True when within it (or uncapped)."""
    cap_ms = 1000 * hp.max_wallclock_seconds
    total = train_time_ms + gptq_ms
    log(f"time_budget train_time_ms:{train_time_ms:.0f} gptq_time_ms:{gptq_ms:.0f} total_ms:{total:.0f} cap_ms:{cap_ms:.0f}")
    if cap_ms > 0 and total > cap_ms:
        log(f"time_valid:false over_cap_ms:{total - cap_ms:.0f}")
        return False
    log("time_valid:true")
    return True


def write_artifact(path, state_entries, state, hp, denv, tok_sha, log) -> None:
    """Rank 0 codes and writes the artifact; every rank then holds the same file (as bytes)."""
    if denv.rank == 0:
        config = artifact_model_config(GPTConfig.from_hparams(hp))
        t0 = time.perf_counter()
        save_artifact(path, state, model_config=config, tokenizer_sha256=tok_sha, scheme=hp.quant_scheme,
                      codec=hp.codec, entries=state_entries)
        header = read_artifact_header(path)
        log(f"export_time_ms:{1000 * (time.perf_counter() - t0):.0f} num_params:{header['num_params']} "
            f"sym_h0_bytes:{header['sym_h0_bits'] / 8:.0f} sym_coded_bytes:{header['sym_coded_bytes']} "
            f"coded_over_h0:{8 * header['sym_coded_bytes'] / max(header['sym_h0_bits'], 1):.4f}")
    share_artifact(path, denv.rank)


def export_and_roundtrip(trainer, hp, denv, device, autocast, val, log, run_dir, code_bytes, tok_sha,
                         train_time_ms: float) -> int:
    """Quantise + code the final weights, reload them from disk into a fresh model, re-evaluate.
    Exit status 1 when the artifact is over 16,000,000 bytes or train + GPTQ time is over the cap."""
    artifact_path = os.path.join(run_dir, f"final_model.{hp.quant_scheme}.{hp.codec}.lgz")
    state = float_cpu_state(trainer.model)  # once, for every export round
    if hp.save_float_weights and denv.rank == 0:  # not part of the artifact: for quantisation studies
        config = artifact_model_config(GPTConfig.from_hparams(hp))
        save_checkpoint(os.path.join(run_dir, "final_weights.lgck"), state, {"model_config": config})

    def write(entries) -> int:
        write_artifact(artifact_path, entries, state, hp, denv, tok_sha, log)
        return os.path.getsize(artifact_path)

    if uses_budget(hp):  # the artifact is written by the allocation's last export
        gptq_ms = export_under_budget(trainer.model, state, hp, device, log, len(code_bytes), write)
        time_valid = log_time_budget(log, hp, train_time_ms, gptq_ms)
    else:
        entries, gptq_ms = calibrate_and_quantize(trainer.model, state, hp, device, log)
        time_valid = log_time_budget(log, hp, train_time_ms, gptq_ms)
        write(entries)
    t_decode = time.perf_counter()  # the eval clock starts at the artifact's decode
    state, header = load_artifact(artifact_path, tokenizer_sha256=tok_sha)
    fresh = GPT(GPTConfig(**header["model_config"])).to(device)
    fresh.load_state_dict(state)
    t0 = time.perf_counter()
    res = run_validation(fresh, val, hp, device, autocast, denv)
    eval_ms = 1000 * (time.perf_counter() - t0)
    bytes_model = os.path.getsize(artifact_path)
    bytes_total = bytes_model + len(code_bytes)
    tag = f"final_{hp.quant_scheme}_{hp.codec}_roundtrip"
    log(f"{tag} val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} tokens:{res['tokens']} bytes:{res['bytes']} eval_time:{eval_ms:.0f}ms data:{val['data']}")
    # the submitted score: every configured phase (sliding, TTT, n-gram), each logged with its time
    final_evaluation(fresh, val["tokens"], val["tables"], hp, device, autocast,
                     lambda line: log(f"{line} data:{val['data']}"), start_time=t_decode, target_byte_counts=val["bytes"])
    log(f"bytes_code:{len(code_bytes)} bytes_model:{bytes_model} bytes_total:{bytes_total} limit:{ARTIFACT_LIMIT_BYTES}")
    if bytes_total > ARTIFACT_LIMIT_BYTES:
        log(f"artifact_valid:false over_limit_by:{bytes_total - ARTIFACT_LIMIT_BYTES}")
        return 1
    log("artifact_valid:true")
    return 0 if time_valid else 1


def start_run(hp, denv, device):
    """Run folder, log, code hash, config.json, seeds."""
    run_dir = os.path.join(hp.out_dir, hp.run_id)
    os.makedirs(run_dir, exist_ok=True)
    log = RunLog(os.path.join(run_dir, "train.log"), denv.rank == 0)
    code_path = os.path.abspath(sys.argv[0])
    with open(code_path, "rb") as f:
        code_bytes = f.read()
    log_environment(log, hp, denv, device, code_bytes, code_path)
    if denv.rank == 0:
        with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hp.as_dict(), f, indent=1)
    torch.manual_seed(hp.seed)
    np.random.seed(hp.seed)
    return run_dir, log, code_bytes


def read_if_exists(path: str) -> bytes:
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as f:
        return f.read()


def resume_or_warm_up(trainer, hp, denv, ckpt_path, log) -> tuple[int, float]:
    """RESUME=1: continue from rank 0's checkpoint (shared as bytes: ranks need no common
    filesystem); else run the warm-up steps (WARMUP_RESTORE_STEPS, COMPILE=1) and restore them."""
    if hp.resume:
        data = broadcast_bytes(read_if_exists(ckpt_path) if denv.rank == 0 else None, 0)
        if not data:
            raise FileNotFoundError(f"RESUME=1 but there is no checkpoint at {ckpt_path} (rank 0): "
                                    f"set OUT_DIR/RUN_ID to the run to resume, or drop RESUME")
        start_step, train_time_ms = trainer.load(ckpt_path, data)
        log(f"resumed_from_step:{start_step} train_time:{train_time_ms:.0f}ms")
        return start_step, train_time_ms
    # warm-up steps that are undone: the official script's WARMUP_RESTORE_STEPS, and compilation
    steps = max(hp.warmup_restore_steps, hp.compile_warmup_steps if hp.compile else 0)
    if steps > 0:
        compile_warmup(trainer, steps)
    return 0, 0.0


def gptq_reserve_ms(model, hp, device, log) -> float:
    """Clock kept back for calibration + solve: GPTQ_RESERVE_SECONDS, or the timed estimate."""
    if not (uses_gptq(hp) or uses_budget(hp)) or hp.max_wallclock_seconds <= 0:
        return 0.0
    if hp.gptq_reserve_seconds >= 0:
        log(f"gptq_reserve_ms:{1000 * hp.gptq_reserve_seconds:.0f} source:GPTQ_RESERVE_SECONDS")
        return 1000 * hp.gptq_reserve_seconds
    est = estimate_gptq_ms(model, hp, device)
    log(f"gptq_reserve_ms:{est['reserve_ms']:.0f} source:estimate hessian_batch_ms:{est['hessian_batch_ms']:.1f} "
        f"solve_largest_ms:{est['solve_largest_ms']:.1f} solve_share:{est['solve_share']:.2f} gptq_tensors:{est['gptq_tensors']} "
        f"code_ms:{est['code_ms']:.0f} rounds:{est['rounds']}")
    return est["reserve_ms"]


def training_budget_ms(max_wallclock_seconds: float, reserve_ms: float) -> float:
    """Training's share of the cap: the cap less the GPTQ reserve (0 = no cap). A reserve that takes
    the whole cap is refused: a budget <= 0 reads as no cap, and training would run past the clock."""
    if max_wallclock_seconds <= 0:
        return 0.0
    budget_ms = 1000 * max_wallclock_seconds - reserve_ms
    if budget_ms <= 0:
        raise ValueError(f"the GPTQ reserve of {reserve_ms / 1000:.1f} s leaves no training time under "
                         f"MAX_WALLCLOCK_SECONDS={max_wallclock_seconds:g}: raise the cap, set GPTQ_RESERVE_SECONDS, "
                         f"or choose a QUANT_SCHEME without GPTQ")
    return budget_ms


def stop_agreed(last_step: bool, denv) -> bool:
    """Every rank must stop on the same step: the max of the ranks' flags."""
    if not denv.distributed:
        return last_step
    return bool(all_reduce_(torch.tensor([int(last_step)]), op="max").item())


def main() -> int:
    hp = Hyperparameters.from_env()
    denv = dist_env()
    device, autocast = setup_device(denv)
    if denv.distributed:
        init_distributed(device)
    master = denv.rank == 0
    run_dir, log, code_bytes = start_run(hp, denv, device)

    sp = load_tokenizer(hp.tokenizer_path)
    if sp.vocab_size() != hp.vocab_size:
        raise ValueError(f"tokenizer {hp.tokenizer_path} has vocab {sp.vocab_size()} but VOCAB_SIZE={hp.vocab_size}")
    tok_sha = tokenizer_sha256(hp.tokenizer_path)
    val = load_validation(hp, build_byte_tables(sp, hp.vocab_size), log)
    val["data"] = data_source_label(val["tokens"], sp)  # fineweb | embedded_pydoc | other, from the tokens
    model = build_model(hp, device)
    log(f"model_params:{count_params(model)} val_targets:{len(val['tokens']) - 1} val_bytes:{int(val['bytes'].sum())}")
    trainer = Trainer(hp, denv, device, autocast, model, log)
    ckpt_path = os.path.join(run_dir, "checkpoint.lgck")
    start_step, train_time_ms = resume_or_warm_up(trainer, hp, denv, ckpt_path, log)
    trainer.budget_ms = training_budget_ms(hp.max_wallclock_seconds, gptq_reserve_ms(model, hp, device, log))

    step, last_step_start_ms, recent_ms = start_step, train_time_ms, []
    while True:
        over = hp.max_wallclock_seconds > 0 and would_overrun(train_time_ms, recent_ms[-5:], trainer.budget_ms)
        last_step = stop_agreed(step >= hp.iterations or over, denv)
        should_eval = hp.val_loss_every > 0 and step > 0 and (step % hp.val_loss_every == 0 or last_step)
        if should_eval:
            res = run_validation(model, val, hp, device, autocast, denv)
            log(f"step:{step}/{hp.iterations} val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} train_time:{train_time_ms:.0f}ms data:{val['data']}")
        if last_step:
            break
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        last_step_start_ms = train_time_ms
        train_loss = trainer.step(step, train_time_ms)
        if device.type == "cuda":
            torch.cuda.synchronize()
        recent_ms.append(1000 * (time.perf_counter() - t0))
        train_time_ms += recent_ms[-1]
        step += 1
        if not math.isfinite(train_loss):
            log(f"error:non_finite_loss step:{step} train_loss:{train_loss}")
            raise FloatingPointError(f"train_loss is {train_loss} at step {step}: stopping (lower the learning rates or check the data)")
        if hp.train_log_every and (step % hp.train_log_every == 0 or step <= 10):
            log(f"step:{step}/{hp.iterations} train_loss:{train_loss:.6f} train_time:{train_time_ms:.0f}ms step_avg:{train_time_ms / (step - start_step or 1):.2f}ms")
        if hp.telemetry_every and step % hp.telemetry_every == 0:
            stats = weight_telemetry(model)  # descriptive spectra of the 2-D weights
            log(f"telemetry step:{step} " + " ".join(f"{k}:{v:.4g}" for k, v in stats.items()))
        if hp.checkpoint_every and step % hp.checkpoint_every == 0 and master:
            trainer.save(ckpt_path, step, train_time_ms)
        if hp.stop_at_step and step == hp.stop_at_step:
            log(f"stopped_at_step:{step} (STOP_AT_STEP: simulated interruption)")
            return 0
    log(f"train_steps:{step} train_time_ms:{train_time_ms:.0f} last_step_start_ms:{last_step_start_ms:.0f} "
        f"train_budget_ms:{trainer.budget_ms:.0f}")
    if not trainer.looping:  # cut before LOOP_ENABLE_AT: evaluate and export the looping model the config defines
        trainer.update_schedule(step, 1.0)
    if trainer.swa is not None and trainer.swa.count > 0:
        trainer.swa.copy_to(model)
        log(f"weights:swa snapshots:{trainer.swa.count}")
    elif trainer.ema is not None:
        trainer.ema.copy_to(model)
        log(f"weights:ema decay:{hp.ema_decay}")
    res = run_validation(model, val, hp, device, autocast, denv)
    log(f"final_float val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} tokens:{res['tokens']} bytes:{res['bytes']} data:{val['data']}")
    status = export_and_roundtrip(trainer, hp, denv, device, autocast, val, log, run_dir, code_bytes, tok_sha, train_time_ms)
    shutdown_distributed()
    return status


if __name__ == "__main__":
    sys.exit(main())
