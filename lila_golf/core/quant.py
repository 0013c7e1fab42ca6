"""Weight quantisation for the artifact: per-row int8 (the challenge baseline), per-row intN with a
clip search ("GPTQ-lite"), full GPTQ (Frantar et al. 2022, arXiv 2210.17323) and Hessian collection.

Every integer scheme is symmetric and per row: a weight matrix W (rows, cols) becomes
q = clamp(round(W / s_r), -qmax, qmax) stored as int8 with one fp16 scale s_r per row, and
dequantises to q * s_r. Tensors with more than 2 dims are viewed as (shape[0], -1); 1-D tensors as
one row. The fp16-rounded scale is what quantisation divides by, so the dequantised weights are a
pure function of the stored arrays.

Schemes (`quantize_tensor(w, scheme)`):
    fp32, fp16, bf16    passthrough at that precision
    raw                 non-float tensors stored as they are
    int8                baseline: per-row clip at the 99.99984th percentile of |w|, qmax 127
    int{2..8}_lite      qmax = 2^(b-1)-1, per row the clip (fraction of the row's absmax) with the
                        smallest row MSE among QUANT_CLIP_RATIOS
    int{2..8}_gptq      GPTQ with a Hessian H = X^T X of the layer input; per row the clip with the
                        smallest Hessian-weighted error among QUANT_GPTQ_CLIP_RATIOS
    int{b}_sd_k{k}      SDClip (record #1855): s_r = k * std(row_r) / qmax, round to nearest
    int{b}_sdgptq_k{k}  SDClip scales, then GPTQ with them
    int{b}_fs_k{k}      Fisher-shaped steps: s_r = k * std(W) / qmax * sqrt(mean(g) / g_r), g_r the
                        row's output sensitivity (`row_weight`, see bitalloc.calibrate), widened to
                        |w_r|max / qmax where the row would clip; equal loss-weighted error per row
                        instead of SDClip's equal relative error
    int{b}_fsgptq_k{k}  the same scales, then GPTQ
  suffixes, in this order (any integer method):
    +lqer{r} / +hlqer{r}  LQER: a rank-r factorisation A B of the quantisation error added back at
                        dequantisation, A (rows, r) int2 with one scale, B (r, cols) int4 with one scale
                        per 64 columns; lqer = plain SVD, hlqer = SVD in the H-weighted norm
    +awq{n}             AWQ-lite: the n most salient input columns (diag(H)_c * |W_:c|^2) in int8
                        with their own row scale, inside the GPTQ solve; the rest at b bits

Usage:
    H = collect_hessians(model, batches)["blocks.0.mlp.fc.weight"]
    entry = quantize_tensor(w, "int6_gptq", H=H); w_hat = dequantize_tensor(entry)
"""
import math
import re

import numpy as np
import torch
import torch.nn as nn

# Baseline facts (openai/parameter-golf train_gpt.py): per-row clip percentile, small tensors kept
# as floats, control tensors (gains, mixes, skip weights) kept in fp32.
QUANT_INT8_CLIP_Q = 0.9999984
QUANT_KEEP_FLOAT_MAX_NUMEL = 65_536
QUANT_CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight",
                          "smear", "gate", "lambda", "ln_scale")
QUANT_EMBED_PATTERNS = ("tok_emb", "embed", "wte", "lm_head", "bigram", "value_emb", "ve_")
# Clip candidates as fractions of each row's absmax (row-MSE search for lite, H-weighted for GPTQ).
QUANT_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
QUANT_GPTQ_CLIP_RATIOS = (1.0, 0.9, 0.8, 0.7)
QUANT_FLOAT_SCHEMES = ("fp32", "fp16", "bf16")
QUANT_ROLE_EMBED_PATTERNS = ("tok_emb", "embed", "wte", "lm_head")
_QUANT_INT_RE = re.compile(r"^int([2-8])_(lite|gptq|sd|sdgptq|fs|fsgptq)(?:_k(\d+(?:\.\d+)?))?"
                           r"(?:\+(h?)lqer([1-9]\d?))?(?:\+awq([1-9]\d*))?$")
QUANT_K_METHODS = ("sd", "sdgptq", "fs", "fsgptq")  # methods whose scale is k * std / qmax
QUANT_LQER_GROUP = 64  # columns per B scale (record #1855)
QUANT_FS_MAX_SHAPE = 8.0  # Fisher shaping moves a row's step at most 8x either way


def parse_scheme(scheme: str) -> tuple[str, int]:
    """Return (kind, bits): kind "float", "raw", "int8" or the integer method ("lite", "gptq",
    "sd", "sdgptq", "fs", "fsgptq"); bits 0 for non-int."""
    spec = parse_spec(scheme)
    return spec["kind"], spec["bits"]


def parse_spec(scheme: str) -> dict:
    """Every field of a scheme string: kind, bits, k (SDClip/Fisher multiplier or None), lqer (rank,
    0 = off), lqer_h (H-weighted LQER), awq (salient columns, 0 = off). See the module doc."""
    spec = {"kind": scheme, "bits": 0, "k": None, "lqer": 0, "lqer_h": False, "awq": 0}
    if scheme in QUANT_FLOAT_SCHEMES:
        return {**spec, "kind": "float"}
    if scheme == "raw":
        return spec
    if scheme == "int8":
        return {**spec, "bits": 8}
    m = _QUANT_INT_RE.match(scheme)
    if m is None or (m.group(3) is None) == (m.group(2) in QUANT_K_METHODS):
        raise ValueError(f"unknown quantisation scheme {scheme!r}: expected one of "
                         f"{QUANT_FLOAT_SCHEMES + ('raw', 'int8')}, int<2..8>_lite / _gptq, or "
                         f"int<2..8>_sd|sdgptq|fs|fsgptq_k<k>, optionally +lqer<r> / +hlqer<r>, +awq<n>")
    return {"kind": m.group(2), "bits": int(m.group(1)), "k": None if m.group(3) is None else float(m.group(3)),
            "lqer": int(m.group(5) or 0), "lqer_h": m.group(4) == "h", "awq": int(m.group(6) or 0)}


def _quant_rows(w: torch.Tensor) -> torch.Tensor:
    """View any tensor as float32 rows: (shape[0], -1) for ndim >= 2, one row otherwise."""
    w = w.detach().float()
    return w.reshape(w.shape[0], -1) if w.ndim >= 2 else w.reshape(1, -1)


def _quant_fp16_scale(clip: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-row scale clip/qmax rounded to fp16 (as stored), kept away from 0 and fp16 subnormals."""
    return (clip / qmax).clamp_min(1e-7).clamp(6.2e-5, 6.5e4).half()


def _quant_rtn(rows: torch.Tensor, scale16: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest with fixed fp16 scales: (R, C) float -> (R, C) int8."""
    return torch.clamp(torch.round(rows / scale16.float()[:, None]), -qmax, qmax).to(torch.int8)


def quantize_int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline per-row int8: clip each row at the 99.99984th percentile of |w|; (q int8, scale fp16)."""
    rows = _quant_rows(w)
    absw = rows.abs()
    # kthvalue instead of torch.quantile: quantile refuses inputs over 16M elements.
    k = min(absw.shape[1], max(1, math.ceil(QUANT_INT8_CLIP_Q * absw.shape[1])))
    clip = absw.kthvalue(k, dim=1).values if absw.shape[1] else torch.zeros(absw.shape[0])
    scale16 = _quant_fp16_scale(clip, 127)
    return _quant_rtn(rows, scale16, 127), scale16


def quantize_lite_rows(w: torch.Tensor, bits: int = 6,
                       clip_ratios=QUANT_CLIP_RATIOS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row intN with a clip search: per row, the clip ratio of absmax with the least row MSE."""
    rows = _quant_rows(w)
    qmax = 2 ** (bits - 1) - 1
    absmax = rows.abs().amax(dim=1) if rows.shape[1] else torch.zeros(rows.shape[0])
    best_q, best_s, best_err = None, None, None
    for ratio in clip_ratios:
        s16 = _quant_fp16_scale(absmax * ratio, qmax)
        q = _quant_rtn(rows, s16, qmax)
        err = (q.float() * s16.float()[:, None] - rows).pow(2).sum(dim=1)  # (R,)
        if best_err is None:
            best_q, best_s, best_err = q, s16, err
            continue
        better = err < best_err
        best_q = torch.where(better[:, None], q, best_q)
        best_s = torch.where(better, s16, best_s)
        best_err = torch.minimum(err, best_err)
    return best_q, best_s


def _gptq_prepare(H: torch.Tensor, cols: int, damp: float, act_order: bool):
    """Damped Hessian -> (perm, upper Cholesky factor of H^-1 (float32), dead columns mask)."""
    if H.shape != (cols, cols):
        raise ValueError(f"GPTQ Hessian shape {tuple(H.shape)} does not match weight cols {cols}")
    H = H.detach().double().clone()  # factorise in float64: H is often badly conditioned
    dead = torch.diag(H) == 0  # inputs that never fire: weight there is irrelevant, zero it
    H[dead, dead] = 1.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols, device=H.device)
    H = H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    return perm, Hinv.float(), dead


def _gptq_core(W: torch.Tensor, Hinv: torch.Tensor, scale: torch.Tensor, qmax: int,
               block_size: int, hi=None) -> torch.Tensor:
    """GPTQ column loop on permuted W (R, C) float32 with upper-Cholesky Hinv (C, C) -> q (R, C).
    hi: None, or (per permuted column a bool, scale (R,)): the True columns use that scale and
    qmax 127 (AWQ-lite salient columns)."""
    W = W.clone()
    R, C = W.shape
    Q = torch.zeros(R, C, dtype=torch.int8, device=W.device)
    s = scale.float()[:, None]  # (R, 1)
    s_hi = hi[1].float()[:, None] if hi is not None else None
    for i1 in range(0, C, block_size):
        i2 = min(i1 + block_size, C)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[:, i:i + 1]  # (R, 1)
            si, qm = (s_hi, 127) if hi is not None and hi[0][i1 + i] else (s, qmax)
            q = torch.clamp(torch.round(w / si), -qm, qm)
            Q[:, i1 + i] = q[:, 0].to(torch.int8)
            err = (w - q * si) / Hinv1[i, i]
            # spread this column's rounding error over the not-yet-quantised columns of the block
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  # lazy batch update of the remaining blocks
    return Q


def gptq_quantize(w: torch.Tensor, H: torch.Tensor, bits: int = 6, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = True, scale: torch.Tensor | None = None,
                  clip_ratios=QUANT_GPTQ_CLIP_RATIOS, hi_cols=None, hi_scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ (Frantar et al.): quantise W (rows, cols) column by column, compensating each rounding
    error on the remaining columns through the Cholesky factor of the inverse Hessian H = X^T X
    (cols, cols). Returns (q int8 (rows, cols), scale fp16 (rows,)). With `scale` given (fp16 per
    row) it is used as is; otherwise each row takes, among `clip_ratios` of its absmax, the clip
    whose GPTQ result has the least output error (dW H dW^T)_rr. hi_cols (long) with hi_scale
    (fp16 (rows,)): those columns are quantised in int8 with hi_scale instead (AWQ-lite).
    """
    if w.ndim != 2:
        raise ValueError(f"gptq_quantize expects a 2-D weight, got shape {tuple(w.shape)}")
    args = (w, H, bits, block_size, damp, act_order, scale, clip_ratios, hi_cols, hi_scale)
    if w.device.type != "cpu":
        return _gptq_quantize_rows(*args)
    # on CPU, one thread: the column loop is thousands of small ops where extra threads only add
    # synchronisation (measured 10-20x slower with 2 threads on a busy 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq_quantize_rows(*args)
    finally:
        torch.set_num_threads(threads)


def _gptq_quantize_rows(w, H, bits, block_size, damp, act_order, scale, clip_ratios, hi_cols, hi_scale):
    """gptq_quantize's body (see there)."""
    qmax = 2 ** (bits - 1) - 1
    R, C = w.shape
    H = H.to(w.device)
    perm, Hinv, dead = _gptq_prepare(H, C, damp, act_order)
    W = w.detach().float().clone()
    W[:, dead] = 0.0
    Wp = W[:, perm]
    inv_perm = torch.argsort(perm)
    hi = None
    if hi_cols is not None:
        mask = torch.zeros(C, dtype=torch.bool)
        mask[hi_cols.cpu()] = True
        hi = (mask[perm.cpu()].tolist(), hi_scale.to(w.device).half())
    if scale is not None:
        scale = scale.to(w.device).half()
        return _gptq_core(Wp, Hinv, scale, qmax, block_size, hi)[:, inv_perm], scale
    absmax = W.abs().amax(dim=1)
    scales = [_quant_fp16_scale(absmax * r, qmax) for r in clip_ratios]
    # rows are independent in GPTQ: run all clip candidates as one stacked (K*R, C) problem
    hi_k = None if hi is None else (hi[0], hi[1].repeat(len(scales)))
    Qs = _gptq_core(Wp.repeat(len(scales), 1), Hinv, torch.cat(scales), qmax, block_size, hi_k)
    Qs = Qs[:, inv_perm].reshape(len(scales), R, C)
    Hd, Wd = H.detach().double(), W.double()
    errs = torch.stack([_gptq_row_error(Wd, Qs[k], scales[k], Hd, hi_cols, hi_scale) for k in range(len(scales))])
    best = errs.argmin(dim=0)  # (R,)
    rows = torch.arange(R, device=w.device)
    return Qs[best, rows], torch.stack(scales)[best, rows]


def _gptq_row_error(W: torch.Tensor, q: torch.Tensor, scale16: torch.Tensor,
                    H: torch.Tensor, hi_cols=None, hi_scale=None) -> torch.Tensor:
    """Per-row output error (dW H dW^T)_rr, dW = W - q*s: (R,) float64."""
    deq = q.double() * scale16.double()[:, None]
    if hi_cols is not None:
        deq[:, hi_cols] = q[:, hi_cols].double() * hi_scale.to(q.device).double()[:, None]
    dW = W - deq
    return ((dW @ H) * dW).sum(dim=1)


def collect_hessians(model: nn.Module, batches, names=None, forward=None) -> dict[str, torch.Tensor]:
    """H = sum over calibration tokens of x^T x for the input x of every nn.Linear (or those whose
    module name is in `names`), keyed by the weight's state_dict name "<module>.weight"; float32 on
    CPU, (in_features, in_features). Each batch is passed as model(batch) (model(*batch) for a
    tuple), or forward(model, batch) when given. Runs under no_grad; restores train/eval mode.
    Under DDP each rank sees its own batches: all_reduce every H (sum) before quantising, so
    that all ranks quantise identically. The scale of H does not matter (damping is relative).
    """
    hessians: dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(key):
        def hook(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # (tokens, in)
            h = x.T @ x
            hessians[key] = hessians[key] + h if key in hessians else h
        return hook

    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (names is None or mod_name in names):
            hooks.append(module.register_forward_hook(make_hook(f"{mod_name}.weight")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if forward is not None:
                    forward(model, batch)
                elif isinstance(batch, (tuple, list)):
                    model(*batch)
                else:
                    model(batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {k: v.cpu() for k, v in hessians.items()}


def _quant_torch_dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def quantize_tensor(w: torch.Tensor, scheme: str, H: torch.Tensor | None = None,
                    device=None, row_weight: torch.Tensor | None = None) -> dict:
    """Quantise one tensor. Returns {"scheme", "shape", "dtype", "arrays": {key: np.ndarray}}:
    float schemes store "w"; integer schemes store "q" (int8, (rows, cols)) and "scale" (fp16, rows),
    AWQ-lite adds "awq_cols" (u16), "awq_q" (int8 (rows, n)), "awq_scale" (fp16) and takes those
    columns out of "q"; LQER adds "lqer_a", "lqer_as", "lqer_b", "lqer_bs" (lqer_factors).
    GPTQ methods need H (cols, cols) and raise ValueError without it; GPTQ runs on `device`
    (default: the CPU), e.g. "cuda" to keep calibration inside the training clock. Fisher-shaped
    methods need row_weight (rows,), the rows' output sensitivities.
    """
    spec = parse_spec(scheme)
    kind, bits = spec["kind"], spec["bits"]
    meta = {"scheme": scheme, "shape": list(w.shape), "dtype": _quant_torch_dtype_name(w)}
    if kind == "raw":
        arr = w.detach().cpu().numpy().copy()
        return {**meta, "arrays": {"w": arr}}
    if kind != "float" and not w.is_floating_point():
        raise ValueError(f"scheme {scheme!r} needs a float tensor, got {w.dtype}")
    if kind == "float":
        return {**meta, "arrays": {"w": _quant_float_array(w, scheme)}}
    if kind == "int8":
        q, s = quantize_int8_rows(w)
        return {**meta, "arrays": {"q": q.cpu().numpy(), "scale": s.cpu().numpy()}}
    if kind.endswith("gptq") and H is None:
        raise ValueError(f"scheme {scheme!r} needs a Hessian H (collect_hessians)")
    rows = _quant_rows(w)
    arrays = _quant_int_arrays(rows, spec, H, device, row_weight)
    if spec["lqer"]:
        residual = rows - _quant_int_dequant(arrays, rows.shape[1])
        arrays.update(lqer_factors(residual, spec["lqer"], H if spec["lqer_h"] else None))
    return {**meta, "arrays": arrays}


def _quant_int_arrays(rows: torch.Tensor, spec: dict, H, device, row_weight) -> dict:
    """q/scale arrays (and the AWQ-lite split) of an integer method: see quantize_tensor."""
    bits, qmax = spec["bits"], 2 ** (spec["bits"] - 1) - 1
    scale = None if spec["k"] is None else quant_k_scale(rows, spec, row_weight)
    cols = hi_scale = None
    if spec["awq"]:
        cols = awq_salient_columns(rows, H, spec["awq"])
        hi_scale = _quant_fp16_scale(rows[:, cols].abs().amax(dim=1), 127)
    if spec["kind"].endswith("gptq"):
        dev = device or "cpu"
        q, s = gptq_quantize(rows.to(dev), H.to(dev), bits=bits, scale=scale, hi_cols=cols, hi_scale=hi_scale)
        q, s = q.cpu(), s.cpu()
    else:
        rest = rows if cols is None else rows[:, _quant_rest_mask(rows.shape[1], cols)]
        q_rest, s = quantize_lite_rows(rest, bits) if scale is None else (_quant_rtn(rest, scale, qmax), scale)
        q = q_rest if cols is None else _quant_merge_cols(q_rest, _quant_rtn(rows[:, cols], hi_scale, 127), cols)
    if cols is None:
        return {"q": q.numpy(), "scale": s.numpy()}
    mask = _quant_rest_mask(rows.shape[1], cols)
    return {"q": q[:, mask].numpy(), "scale": s.numpy(), "awq_cols": cols.numpy().astype(np.uint16),
            "awq_q": q[:, cols].numpy(), "awq_scale": hi_scale.numpy()}


def quant_k_scale(rows: torch.Tensor, spec: dict, row_weight=None) -> torch.Tensor:
    """fp16 row scales of the k methods. SDClip: k * std(row) / qmax (clips beyond k std).
    Fisher-shaped: max(k * std(W) * sqrt(mean(g) / g_r), |w_r|max) / qmax, the shaping clamped to
    [1/8, 8]: the step the allocation asks for, widened for a row that would clip."""
    qmax = 2 ** (spec["bits"] - 1) - 1
    scale = spec["k"] * quant_k_base(rows, spec, row_weight)
    if spec["kind"] in ("fs", "fsgptq"):
        scale = torch.maximum(scale, rows.abs().amax(dim=1))
    return _quant_fp16_scale(scale, qmax)


def quant_k_base(rows: torch.Tensor, spec: dict, row_weight=None) -> torch.Tensor:
    """The row scales of the k methods before k / qmax, the no-clip floor and fp16 rounding: (R,)."""
    if spec["kind"] in ("sd", "sdgptq"):
        return rows.std(dim=1, correction=0)
    if row_weight is None or row_weight.numel() != rows.shape[0]:
        raise ValueError(f"Fisher-shaped scheme {spec['kind']!r} needs row_weight with one value per row "
                         f"({rows.shape[0]}), got {None if row_weight is None else tuple(row_weight.shape)}")
    g = row_weight.detach().double().cpu().clamp_min(1e-30)
    shape = (g.mean() / g).sqrt().clamp(1 / QUANT_FS_MAX_SHAPE, QUANT_FS_MAX_SHAPE).float()
    return rows.std(correction=0) * shape


def awq_salient_columns(rows: torch.Tensor, H: torch.Tensor | None, n: int) -> torch.Tensor:
    """The n input columns with the largest diag(H)_c * sum_r W_rc^2 (|W_:c|^2 without H), sorted."""
    if n >= rows.shape[1]:
        raise ValueError(f"AWQ-lite: {n} salient columns of a matrix with only {rows.shape[1]} columns")
    salience = rows.double().pow(2).sum(dim=0)
    if H is not None:
        salience = salience * torch.diagonal(H).double().cpu()
    return torch.sort(torch.topk(salience, n).indices).values


def _quant_rest_mask(cols: int, hi_cols: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(cols, dtype=torch.bool)
    mask[hi_cols] = False
    return mask


def _quant_merge_cols(q_rest: torch.Tensor, q_hi: torch.Tensor, hi_cols: torch.Tensor) -> torch.Tensor:
    """Put the salient columns back between the others: (R, C - n) + (R, n) -> (R, C)."""
    C = q_rest.shape[1] + q_hi.shape[1]
    out = torch.empty(q_rest.shape[0], C, dtype=q_rest.dtype)
    out[:, _quant_rest_mask(C, hi_cols)] = q_rest
    out[:, hi_cols] = q_hi
    return out


def lqer_factors(E: torch.Tensor, rank: int, H: torch.Tensor | None = None,
                 group: int = QUANT_LQER_GROUP) -> dict:
    """LQER: E (R, C) ~ A B with A (R, r) int2 ({-1, 0, 1}) and one fp16 scale, B (r, C) int4 with
    one fp16 scale per `group` columns. A spans the top-r left singular vectors of E (of E L,
    H = L L^T, when H is given: the output-error norm); B is refitted to the quantised A by least
    squares (the same B in either norm), then quantised. Arrays lqer_a, lqer_as, lqer_b, lqer_bs."""
    R, C = E.shape
    rank = min(rank, R, C)
    Ed = E.detach().double().cpu()
    target = Ed
    if H is not None:
        Hd = H.detach().double().cpu()
        target = Ed @ torch.linalg.cholesky(Hd + 0.01 * Hd.diagonal().mean() * torch.eye(C, dtype=Hd.dtype))
    U = torch.linalg.svd(target, full_matrices=False)[0][:, :rank]  # (R, r), orthonormal columns
    a_q, a_s = _lqer_ternary(U)
    A = a_q.double() * a_s.double()
    B = torch.linalg.lstsq(A, Ed, driver="gelsd").solution if A.abs().sum() > 0 else torch.zeros(rank, C, dtype=Ed.dtype)
    pad = -C % group
    Bg = torch.nn.functional.pad(B, (0, pad)).reshape(rank, -1, group)  # (r, groups, group)
    b_s = _quant_fp16_scale(Bg.abs().amax(dim=2).reshape(-1).float(), 7).reshape(rank, -1)
    b_q = torch.clamp(torch.round(Bg / b_s.double()[:, :, None]), -7, 7).reshape(rank, -1)[:, :C]
    return {"lqer_a": a_q.to(torch.int8).numpy(), "lqer_as": a_s.reshape(1).numpy(),
            "lqer_b": b_q.to(torch.int8).numpy(), "lqer_bs": b_s.numpy()}


def _lqer_ternary(U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary U ~ s * t, t in {-1, 0, 1}, one fp16 scale s chosen from a grid by squared error."""
    rms = U.pow(2).mean().sqrt().float()
    best = None
    for c in (0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0):
        s16 = _quant_fp16_scale(rms.reshape(1) * c, 1)
        t = torch.clamp(torch.round(U.float() / s16.float()), -1, 1)
        err = float((t * s16.float() - U.float()).pow(2).sum())
        if best is None or err < best[0]:
            best = (err, t, s16)
    return best[1], best[2]


def lqer_product(arrays: dict, cols: int) -> torch.Tensor:
    """Dequantised A B (R, cols) float32 from the lqer_* arrays."""
    a = torch.from_numpy(np.array(arrays["lqer_a"])).float() * torch.from_numpy(np.array(arrays["lqer_as"])).float()
    b = torch.from_numpy(np.array(arrays["lqer_b"])).float()
    bs = torch.from_numpy(np.array(arrays["lqer_bs"])).float()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or b.shape[1] != cols or bs.shape[0] != b.shape[0]:
        raise ValueError(f"LQER factors of shapes {tuple(a.shape)} x {tuple(b.shape)} do not make (rows, {cols})")
    return a @ (b * bs.repeat_interleave(QUANT_LQER_GROUP, dim=1)[:, :cols])


def _quant_float_array(w: torch.Tensor, scheme: str) -> np.ndarray:
    """fp32/fp16 as numpy arrays; bf16 as its raw uint16 bit pattern (numpy has no bfloat16)."""
    w = w.detach().cpu()
    if scheme == "fp32":
        return w.float().numpy().copy()
    if scheme == "fp16":
        return w.half().numpy().copy()
    return w.bfloat16().view(torch.int16).numpy().view(np.uint16).copy()


def dequantize_tensor(entry: dict) -> torch.Tensor:
    """Inverse of quantize_tensor: float32 tensor of the original shape ("raw": original dtype)."""
    kind, _ = parse_scheme(entry["scheme"])
    shape, arrays = tuple(entry["shape"]), entry["arrays"]
    if kind == "raw":
        return torch.from_numpy(np.array(arrays["w"])).reshape(shape)
    if kind == "float":
        w = arrays["w"]
        if entry["scheme"] == "bf16":
            t = torch.from_numpy(np.array(w).view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.array(w))
        return t.float().reshape(shape)
    if "awq_cols" not in arrays and "lqer_a" not in arrays:
        q = torch.from_numpy(np.array(arrays["q"])).float()
        s = torch.from_numpy(np.array(arrays["scale"])).float()
        return (q * s[:, None]).reshape(shape)
    cols = math.prod(shape[1:]) if len(shape) >= 2 else math.prod(shape)
    return _quant_int_dequant(arrays, cols).reshape(shape)


def _quant_int_dequant(arrays: dict, cols: int) -> torch.Tensor:
    """(R, cols) float32 from integer arrays: q * scale, the AWQ-lite columns, + the LQER term."""
    W = torch.from_numpy(np.array(arrays["q"])).float() * torch.from_numpy(np.array(arrays["scale"])).float()[:, None]
    if "awq_cols" in arrays:
        hi = torch.from_numpy(np.array(arrays["awq_cols"]).astype(np.int64))
        hi_w = torch.from_numpy(np.array(arrays["awq_q"])).float() * torch.from_numpy(np.array(arrays["awq_scale"])).float()[:, None]
        if hi.numel() + W.shape[1] != cols or hi_w.shape != (W.shape[0], hi.numel()) or int(hi.max()) >= cols:
            raise ValueError(f"AWQ-lite arrays do not fit a matrix of {cols} columns")
        W = _quant_merge_cols(W, hi_w, hi)
    if "lqer_a" in arrays:
        W = W + lqer_product(arrays, cols)
    return W


def quant_role(name: str) -> str:
    """Role of a tensor, the unit of SDClip's k and of the per-role symbol streams: "attn", "mlp",
    "embed" (token, value and hashed-bigram embeddings) or "other"."""
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "embed" if any(p in name for p in QUANT_ROLE_EMBED_PATTERNS) else "other"


def default_plan(name: str, tensor: torch.Tensor, base_scheme: str) -> str:
    """Precision per tensor group: non-float -> raw; control tensors (gains, mixes, skip weights)
    -> fp32; small (<= 65,536 elements) or 1-D -> fp16; embeddings -> int8 (when the base scheme is
    an integer scheme); everything else the base scheme."""
    kind, _ = parse_scheme(base_scheme)
    if not tensor.is_floating_point():
        return "raw"
    if any(p in name for p in QUANT_CONTROL_PATTERNS) and tensor.numel() <= QUANT_KEEP_FLOAT_MAX_NUMEL:
        return "fp32"
    if kind == "float":
        return base_scheme
    if tensor.ndim < 2 or tensor.numel() <= QUANT_KEEP_FLOAT_MAX_NUMEL:
        return "fp16"
    if any(p in name for p in QUANT_EMBED_PATTERNS):
        return "int8"
    return base_scheme


def _quant_symbol_counts(symbols) -> np.ndarray:
    arrays = symbols if isinstance(symbols, (list, tuple)) else [symbols]
    flat = np.concatenate([np.asarray(a).astype(np.int64).ravel() for a in arrays])
    if flat.size == 0:
        return np.zeros(0)
    return np.bincount(flat - flat.min())


def symbol_entropy_bits(symbols) -> float:
    """Global zero-order entropy H0 of integer symbols (an array or a list of arrays), in bits,
    total: N * H(p) with p the empirical symbol frequencies over all of them."""
    counts = _quant_symbol_counts(symbols)
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def row_entropy_bits(symbols) -> float:
    """Sum over rows of each row's own zero-order entropy (bits, total), for a 2-D array or a
    list of them: what per-row tables could reach if the tables themselves were free."""
    arrays = symbols if isinstance(symbols, (list, tuple)) else [symbols]
    total = 0.0
    for a in arrays:
        a = np.asarray(a).astype(np.int64)
        a = a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)
        if a.size == 0:
            continue
        a = a - a.min()
        A = int(a.max()) + 1
        counts = np.bincount((a + A * np.arange(a.shape[0])[:, None]).ravel(),
                             minlength=A * a.shape[0]).reshape(a.shape[0], A).astype(np.float64)
        p = counts / counts.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            total += float(-np.nansum(np.where(counts > 0, counts * np.log2(p), 0.0)))
    return total
