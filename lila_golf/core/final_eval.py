"""The final evaluation: the run's submitted score, every phase across ranks, inside the eval budget.

    t_decode = time.perf_counter()              # when the artifact starts to decode
    ... load the artifact into `model` ...
    res = final_evaluation(model, val_tokens, byte_tables, hp, device, autocast, log, start_time=t_decode)

Phases, in this order, each on by its config (core/config.py, export and evaluation group):

    plain    always           non-overlapping windows of TRAIN_SEQ_LEN
    sliding  EVAL_STRIDE > 0   each target in the window of stride EVAL_STRIDE that gives it most context
    ttt      TTT_MODE=doc      score-first per-document LoRA TTT (lila_golf/core/ttt.py, DocTTT);
             TTT_MODE=phased   ... plus global SGD on the documents of each finished phase
    ngram    NGRAM_ORDER > 0   the last model phase mixed with the per-token online n-gram, mixing weight
                               learned online (lila_golf/core/ngrammix.py)

Every phase scores every target of val_tokens (no truncation to a multiple of seq_len), with the
challenge's bytes. Each rank computes its share (windows, documents, or the targets whose previous
token is in its part of the vocabulary for the n-gram); per-target log-probabilities are summed over
ranks into whole arrays, so every rank holds the same numbers and each phase's result does not depend
on the world size (the tests compare 2 gloo processes with one). The submitted score is the last
phase that ran. Log lines (rank 0):

    eval_phase name:<plain|sliding|ttt|ngram> val_loss:L val_bpb:B targets:N bytes:Y time_ms:T ...
    final_submitted val_loss:L val_bpb:B targets:N bytes:Y eval_time_ms:T phases:plain,sliding,...

eval_time_ms runs from `start_time` (a time.perf_counter() value; default: this call's start) to the
submitted line. The model's weights are restored at the end (phased TTT changes them on the way).
"""
import time

import numpy as np
import torch

from .collectives import all_reduce_, rank_and_world
from .data import bits_per_byte, target_bytes
from .ngrammix import MixerConfig, NgramArrays, learned_mixture, online_ngram
from .scoring import _scoring_run_plan, sliding_plan
from .ttt import DocTTT, document_spans, ttt_balanced_docs


def sum_over_ranks(array: np.ndarray, device) -> np.ndarray:
    """Element-wise sum over ranks (float64, through a tensor on `device`: NCCL needs CUDA tensors).
    Ranks fill disjoint entries and leave zeros elsewhere, so the sum is exact."""
    if rank_and_world()[1] == 1:
        return array
    return all_reduce_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))).numpy()


def phase_result(name: str, logp: np.ndarray, n_bytes: int, seconds: float, **extra) -> dict:
    """Sums of one phase over the whole target array (the same on every rank)."""
    nll = -float(np.sum(logp, dtype=np.float64))
    return dict(name=name, val_loss=nll / len(logp), val_bpb=bits_per_byte(nll, n_bytes), targets=len(logp),
                bytes=n_bytes, time_ms=1000.0 * seconds, **extra)


@torch.no_grad()
def window_phase(model, tokens: torch.Tensor, seq_len: int, stride: int, batch_seqs: int, autocast, progress=None):
    """Plain (stride = seq_len) or sliding windows: (logp float64, entropy float64) of every target,
    index t - 1; this rank scores a contiguous block of the window plan."""
    rank, world = rank_and_world()
    n = int(tokens.numel())
    plan = sliding_plan(1, n, seq_len, stride)
    mine = plan[len(plan) * rank // world:len(plan) * (rank + 1) // world]
    logp, entropy = np.zeros(n - 1), np.zeros(n - 1)

    def logits_fn(x):
        if autocast is None:
            return model(x).float()
        with autocast():
            return model(x).float()

    for b in range(0, len(mine), 16 * batch_seqs):  # blocks of windows, for the progress bar
        block = mine[b:b + 16 * batch_seqs]
        lp, ent, _ = _scoring_run_plan(logits_fn, tokens, 0, block, batch_seqs, None, (), True)
        j0, j1 = block[0][1], block[-1][2]
        logp[j0 - 1:j1 - 1], entropy[j0 - 1:j1 - 1] = lp.cpu().numpy(), ent.cpu().numpy()
        if progress is not None:
            progress(j1 - j0)
    device = tokens.device
    return sum_over_ranks(logp, device), sum_over_ranks(entropy, device)


def ttt_phase_bounds(num_docs: int, phases: int, phase_docs: int) -> list[int]:
    """Document counts after which the phased TTT takes its SGD pass (a fixed grid: phase_docs / phases
    apart), ending with num_docs; [num_docs] when there are no phases."""
    ends = [round(k * phase_docs / phases) for k in range(1, phases + 1)] if phases > 0 else []
    return sorted({e for e in ends if 0 < e < num_docs} | {num_docs})


def ttt_phase(model, tokens: torch.Tensor, hp, bos_id: int, autocast, progress=None):
    """Per-document TTT (TTT_MODE=doc) or phased (TTT_MODE=phased): (logp, entropy) of every target."""
    if bos_id < 0:
        raise ValueError(f"TTT_MODE={hp.ttt_mode} needs the tokenizer's BOS id to find the documents (byte_tables.bos_id)")
    rank, world = rank_and_world()
    n = int(tokens.numel())
    spans = document_spans(tokens.cpu().numpy(), bos_id)
    engine = DocTTT(model, hp.train_seq_len, chunk=hp.ttt_chunk, lora_rank=hp.ttt_rank, lr=hp.ttt_lr,
                    targets=tuple(t for t in hp.ttt_targets.split(",") if t), batch_docs=hp.ttt_batch_docs,
                    seed=hp.seed, autocast=autocast, phase_lr=hp.ttt_phase_lr, phase_batch=hp.ttt_phase_batch)
    phases = hp.ttt_phases if hp.ttt_mode == "phased" else 0
    logp, entropy = np.zeros(n - 1), np.zeros(n - 1)
    d0 = 0
    for d1 in ttt_phase_bounds(len(spans), phases, hp.ttt_phase_docs):
        group = spans[d0:d1]
        engine.score_documents(tokens, group[ttt_balanced_docs(group, rank, world)], logp, entropy, progress)
        if d1 < len(spans):  # phase finished on every rank: all its documents are scored
            engine.phase_sgd(tokens, group)
        d0 = d1
    return sum_over_ranks(logp, tokens.device), sum_over_ranks(entropy, tokens.device)


def ngram_vocab_part(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """This rank's part of the vocabulary for the n-gram (bool (V,)): the previous tokens of its
    targets. Tokens go, most frequent first, to the rank with the fewest targets so far."""
    rank, world = rank_and_world()
    counts = np.bincount(tokens[:-1], minlength=vocab_size)
    load, own = np.zeros(world), np.zeros(vocab_size, dtype=bool)
    for tok in np.argsort(-counts, kind="stable"):
        r = int(np.argmin(load))
        load[r] += counts[tok]
        own[tok] = r == rank
    return own


def ngram_phase(model_logp, model_entropy, tokens: np.ndarray, hp, device):
    """The per-token online n-gram of every target (this rank's vocabulary part, summed over ranks),
    mixed under the model phase's log-probabilities by the online-learned weight."""
    own = ngram_vocab_part(tokens, hp.vocab_size)
    ng = online_ngram(tokens, hp.vocab_size, hp.ngram_order, hp.ngram_discount, hp.ngram_beta, own)
    parts = [sum_over_ranks(a.astype(np.float64), device) for a in (ng.logp, ng.order, ng.ctx_count, ng.distinct)]
    ng = NgramArrays(parts[0], parts[1].astype(np.int8), parts[2], parts[3])
    cfg = MixerConfig(max_order=hp.ngram_order, lr=hp.ngram_mix_lr, min_chunk=hp.ngram_mix_chunk)
    return learned_mixture(model_logp, model_entropy, ng, cfg)


def final_evaluation(model, val_tokens, byte_tables, hp, device, autocast, log, *, start_time: float | None = None,
                     progress=None, target_byte_counts=None) -> dict:
    """Run the configured phases (module docstring); log one eval_phase line each and the
    final_submitted line. Returns {"phases": [phase dicts], "submitted": dict}.
    progress: optional factory (total_targets, phase_name) -> callable(n_done_increment) (rank 0 bars).
    target_byte_counts: bytes of each target (N-1,) where the data carries them (a byte sidecar);
    otherwise they come from byte_tables by the challenge's rule."""
    start_time = time.perf_counter() if start_time is None else start_time
    tokens_np = np.asarray(val_tokens, dtype=np.int64)
    if tokens_np.ndim != 1 or len(tokens_np) < 2:
        raise ValueError(f"final_evaluation needs a 1-D stream of >= 2 val tokens, got shape {tokens_np.shape}")
    if target_byte_counts is not None and len(target_byte_counts) != len(tokens_np) - 1:
        raise ValueError(f"target_byte_counts has {len(target_byte_counts)} entries for {len(tokens_np) - 1} targets")
    n_bytes = int(np.sum(target_byte_counts) if target_byte_counts is not None
                  else target_bytes(tokens_np[:-1], tokens_np[1:], byte_tables).sum())
    tokens = torch.from_numpy(tokens_np).to(device)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.eval()
    batch_seqs = max(1, hp.val_batch_tokens // hp.train_seq_len)
    bar = (lambda name: progress(len(tokens_np) - 1, name)) if progress is not None else (lambda name: None)
    results = []
    try:
        t0 = time.perf_counter()
        logp, entropy = window_phase(model, tokens, hp.train_seq_len, hp.train_seq_len, batch_seqs, autocast, bar("plain"))
        results.append(_fe_log(log, phase_result("plain", logp, n_bytes, time.perf_counter() - t0)))
        if hp.eval_stride > 0:
            t0 = time.perf_counter()
            logp, entropy = window_phase(model, tokens, hp.train_seq_len, hp.eval_stride, batch_seqs, autocast,
                                         bar("sliding"))
            results.append(_fe_log(log, phase_result("sliding", logp, n_bytes, time.perf_counter() - t0,
                                                     stride=hp.eval_stride)))
        if hp.ttt_mode != "off":
            t0 = time.perf_counter()
            logp, entropy = ttt_phase(model, tokens, hp, byte_tables.bos_id, autocast, bar("ttt"))
            results.append(_fe_log(log, phase_result("ttt", logp, n_bytes, time.perf_counter() - t0, mode=hp.ttt_mode)))
        if hp.ngram_order > 0:
            t0 = time.perf_counter()
            mixed, weight = ngram_phase(logp, entropy, tokens_np, hp, device)
            results.append(_fe_log(log, phase_result("ngram", mixed, n_bytes, time.perf_counter() - t0,
                                                     order=hp.ngram_order, mean_weight=round(weight, 4))))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    last = results[-1]
    submitted = {k: last[k] for k in ("val_loss", "val_bpb", "targets", "bytes")}
    submitted.update(eval_time_ms=1000.0 * (time.perf_counter() - start_time), phases=[r["name"] for r in results])
    log(f"final_submitted val_loss:{submitted['val_loss']:.8f} val_bpb:{submitted['val_bpb']:.8f} "
        f"targets:{submitted['targets']} bytes:{submitted['bytes']} eval_time_ms:{submitted['eval_time_ms']:.0f} "
        f"phases:{','.join(submitted['phases'])}")
    return {"phases": results, "submitted": submitted}


def _fe_log(log, res: dict) -> dict:
    extra = " ".join(f"{k}:{v}" for k, v in res.items()
                     if k not in ("name", "val_loss", "val_bpb", "targets", "bytes", "time_ms"))
    log(f"eval_phase name:{res['name']} val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} "
        f"targets:{res['targets']} bytes:{res['bytes']} time_ms:{res['time_ms']:.0f}" + (f" {extra}" if extra else ""))
    return res
