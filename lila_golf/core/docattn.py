"""Document-isolated attention (DOC_ISOLATION=1): no token attends across a BOS, so changing one
document never changes another's logits. A block mask for SDPA on CPU (and on CUDA without
flash-attn); FlashAttention's varlen kernel on CUDA when installed (FA3 flash_attn_interface or FA2).

    docs = doc_layout(idx, bos_id)         # once per forward
    y = doc_attention(q, k, v, docs)       # per layer, in place of causal SDPA
"""
import torch
import torch.nn.functional as F


def doc_layout(idx: torch.Tensor, bos_id: int):
    """Where documents lie in a batch (every document starts with BOS; tokens before the first BOS of
    a row are one document). On CUDA with flash-attn installed: ("varlen", cu_seqlens, max_len) over
    the flattened batch; else ("mask", (B, 1, T, T) bool): causal and within one document."""
    B, T = idx.shape
    starts = idx == bos_id
    starts[:, 0] = True
    if idx.is_cuda and _varlen_flash() is not None:
        where = torch.nonzero(starts.reshape(-1)).flatten()
        cu = torch.cat((where, where.new_tensor([B * T]))).to(torch.int32)
        return ("varlen", cu, int((cu[1:] - cu[:-1]).max()))
    doc = torch.cumsum(starts, dim=1)  # (B, T) document number within the row
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return ("mask", (causal & (doc[:, :, None] == doc[:, None, :]))[:, None])


def _varlen_flash():
    """flash_attn_varlen_func of FlashAttention 3 or 2 when installed, else None."""
    try:
        from flash_attn_interface import flash_attn_varlen_func
    except ImportError:
        try:
            from flash_attn import flash_attn_varlen_func
        except ImportError:
            return None
    return flash_attn_varlen_func


def doc_attention(q, k, v, docs, scale=None) -> torch.Tensor:
    """Causal attention that never crosses a document start. q: (B, T, H, hd); k, v: (B, T, K, hd)."""
    B, T, H, hd = q.shape
    if docs[0] == "varlen":  # packed (B*T, heads, hd) in bf16 (the kernel takes GQA as is, not fp32)
        _, cu, max_len = docs
        dtype = v.dtype
        q, k, v = (t.reshape(B * T, t.size(2), -1).to(torch.bfloat16).contiguous() for t in (q, k, v))
        out = _varlen_flash()(q, k, v, cu, cu, max_len, max_len, causal=True, softmax_scale=scale)
        return (out[0] if isinstance(out, tuple) else out).reshape(B, T, H, -1).to(dtype)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=docs[1],
                                       scale=scale, enable_gqa=k.size(2) != H)
    return y.transpose(1, 2)
