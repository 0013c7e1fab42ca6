"""The frontier switches of issue 17: each changes the output, keeps causality and has its named
property (attention gate, parallel lanes, loop, x0 lane, gated skips, BOS-masked SmearGate,
document isolation, QK RMSNorm with q gain, asymmetric softcaps)."""
import pytest
import torch

from lila_golf.core.config import GPTConfig, artifact_model_config
from lila_golf.core.model import GPT, doc_attention, doc_layout, loop_schedule

V, BOS = 64, 1
FRONTIER = dict(vocab_size=V, num_layers=6, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2,
                activation="leaky_relu2", rope_dims=4, xsa_last_n=6, value_residual=True, ln_scale=True,
                smear_gate=True, bigram_hash_buckets=31, bigram_dim=8, bos_id=BOS, attn_gate_width=8,
                skip_gates=True, smear_bos_mask=True, doc_isolation=True, parallel_start=4,
                loop_start=1, loop_end=2, num_loops=1, logit_softcap_neg=20.0)


def frontier_model(**overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**FRONTIER, **overrides}))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # zero-initialised gates and projections would hide some switches at init
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def docs_batch(seed=0) -> torch.Tensor:
    """Two rows of 24 tokens; BOS starts documents at 0, 7, 15 (row 0) and 0, 11 (row 1)."""
    x = torch.randint(2, V, (2, 24), generator=torch.Generator().manual_seed(seed))
    x[0, [0, 7, 15]] = BOS
    x[1, [0, 11]] = BOS
    return x


def _off_attn_gate(m):
    for b in m.blocks: b.attn.gate_width = 0
def _off_qk_norm(m):
    for b in m.blocks: b.attn.use_qk_norm = False
def _off_x0(m):
    for b in m.blocks: b.use_x0 = False
def _off_skip_gates(m): m.cfg.skip_gates = False
def _off_smear_mask(m): m.cfg.smear_bos_mask = False
def _off_doc_isolation(m): m.cfg.doc_isolation = False
def _off_lanes(m): m.cfg.parallel_start = 0
def _off_loop(m): m.set_looping(False)
def _off_neg_softcap(m): m.cfg.logit_softcap_neg = 0.0


SWITCHES = [_off_attn_gate, _off_qk_norm, _off_x0, _off_skip_gates, _off_smear_mask, _off_doc_isolation,
            _off_lanes, _off_loop, _off_neg_softcap]


@pytest.mark.parametrize("switch_off", SWITCHES, ids=lambda f: f.__name__)
def test_every_frontier_switch_changes_the_output(switch_off):
    model, x = frontier_model(), docs_batch()
    with torch.no_grad():
        model.tok_emb.weight.mul_(30)  # logits beyond the softcaps, so the caps matter
        on = model(x)
        switch_off(model)
        off = model(x)
    assert (on - off).abs().max() > 1e-4


@pytest.mark.parametrize("overrides", [{}, dict(doc_isolation=False, smear_bos_mask=False)])
def test_frontier_stack_is_causal(overrides):
    model, x = frontier_model(**overrides), docs_batch()
    with torch.no_grad():
        ref = model(x)
        for t in (0, 6, 14, 20):
            y = x.clone()
            y[:, t + 1:] = (y[:, t + 1:] + 7) % V
            out = model(y)
            assert torch.allclose(out[:, :t + 1], ref[:, :t + 1], atol=1e-6), t
            assert not torch.allclose(out[:, t + 1:], ref[:, t + 1:], atol=1e-6)


# ------------------------------------------------------------------ document isolation, SmearGate

@pytest.mark.parametrize("doc", [(0, 1, 7), (0, 8, 15), (1, 1, 11)])
def test_changing_one_document_never_changes_another(doc):
    """Every switch on (SmearGate, BigramHash, value residual, XSA, loop, lanes, gates): new tokens
    in one document leave every other document's logits exactly as they were."""
    row, a, b = doc
    model, x = frontier_model(), docs_batch()
    y = x.clone()
    y[row, a:b] = (y[row, a:b] + 5 - 2) % (V - 2) + 2  # new content, no BOS added or removed
    with torch.no_grad():
        ref, out = model(x), model(y)
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[row, a:] = True
    ends = (x[row] == BOS).nonzero().flatten().tolist() + [x.size(1)]
    inside[row, next(e for e in ends if e >= b):] = False  # later documents of the row are "others"
    assert torch.equal(out[~inside], ref[~inside])
    assert not torch.allclose(out[inside], ref[inside])


def test_without_isolation_a_document_reaches_the_next():
    model, x = frontier_model(doc_isolation=False), docs_batch()
    y = x.clone()
    y[0, 1:7] = (y[0, 1:7] + 3 - 2) % (V - 2) + 2
    with torch.no_grad():
        assert not torch.allclose(model(y)[0, 7:], model(x)[0, 7:])


@pytest.mark.parametrize("mask", [True, False])
def test_smear_gate_keeps_the_last_token_of_a_document_out_of_the_next_bos(mask):
    """Document isolation on: with the BOS mask, the token before a BOS never reaches that BOS
    position; without it SmearGate carries it across (the leak PR #1855 fixed)."""
    model, x = frontier_model(smear_bos_mask=mask), docs_batch()
    y = x.clone()
    y[0, 6] = (y[0, 6] + 1 - 2) % (V - 2) + 2  # last token of document 1; position 7 is the next BOS
    with torch.no_grad():
        same = torch.equal(model(y)[0, 7:], model(x)[0, 7:])
    assert same == mask


# ------------------------------------------------------------------ attention: QK norm, gate, layout

def test_doc_layout_mask_is_causal_within_documents():
    x = torch.tensor([[5, 6, BOS, 7, 8, BOS, 9]])
    kind, mask = doc_layout(x, BOS)
    doc = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    expected = torch.tril(torch.ones(7, 7, dtype=torch.bool)) & (doc[:, None] == doc[None, :])
    assert kind == "mask" and torch.equal(mask[0, 0], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="varlen flash attention needs CUDA")
def test_varlen_flash_matches_the_block_mask():
    from lila_golf.core.docattn import _varlen_flash
    if _varlen_flash() is None:
        pytest.skip("flash-attn (FA3 flash_attn_interface or FA2 flash_attn) not installed")
    x = docs_batch().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 24, 4, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 24, 2, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    varlen = doc_attention(q, k, v, doc_layout(x, BOS))
    starts = x == BOS
    doc = torch.cumsum(starts, 1)
    mask = (torch.ones(24, 24, dtype=torch.bool, device="cuda").tril() & (doc[:, :, None] == doc[:, None, :]))[:, None]
    assert torch.allclose(varlen.float(), doc_attention(q, k, v, ("mask", mask)).float(), atol=2e-2)


def attention_input(seed=3, B=2, T=16, D=32):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_rmsnorm_makes_attention_weights_scale_free(qk_norm):
    """With QK RMSNorm (and the learned per-head q gain after it) the attention pattern ignores the
    scale of its input, so the layer is homogeneous: attn(c x) = c attn(x); without it, not."""
    attn = frontier_model(attn_gate_width=0, value_residual=False).blocks[0].attn
    attn.use_qk_norm = qk_norm
    x = attention_input()
    with torch.no_grad():
        y1, y5 = attn(x)[0], attn(5 * x)[0]
    assert torch.allclose(y5, 5 * y1, atol=1e-4) == qk_norm
    assert attn.q_gain.shape == (4,) and attn.q_gain.requires_grad


def test_attention_gate_scales_each_head_by_a_sigmoid_of_its_own_leading_channels():
    attn = frontier_model(xsa_last_n=0).blocks[0].attn
    seen = []
    attn.proj.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))

    def gate_factor(x):  # proj input with the gate / without it: (B, T, H, hd)
        seen.clear()
        with torch.no_grad():
            attn(x)
            attn.gate_width = 0
            attn(x)
            attn.gate_width = 8
        return (seen[0] / seen[1]).view(2, 16, 4, 8)

    x = attention_input()
    ratio = gate_factor(x)
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4)  # one factor per head
    assert (ratio > 0).all() and (ratio < 1).all()
    later, window = x.clone(), x.clone()
    later[..., 8:] += 1.0  # channels past the window: not the gate's input
    window[..., :8] += 1.0
    assert torch.allclose(gate_factor(later), ratio, atol=1e-4)
    assert not torch.allclose(gate_factor(window), ratio, atol=1e-3)
    with torch.no_grad():
        attn.attn_gate.zero_()  # the initial value: every head at sigmoid(0) = 1/2
    assert torch.allclose(gate_factor(x), torch.full_like(ratio, 0.5))


# ------------------------------------------------------------------ lanes, loop, x0, skips, caps

def test_parallel_lanes_with_unit_mix_equal_the_single_stream():
    lanes = frontier_model()
    with torch.no_grad():
        for b in lanes.blocks[4:]:
            b.lane_lambdas.fill_(1.0)
        single = frontier_model()
        single.load_state_dict(lanes.state_dict())
        single.cfg.parallel_start = 0
        x = docs_batch()
        assert torch.allclose(lanes(x), single(x), atol=1e-5)


def test_parallel_lanes_keep_mlp_out_of_the_attention_lane():
    """Mix [[1, 0], [0, 1]]: attention writes only lane 0, the MLP only lane 1, so no MLP of the
    parallel layers ever reaches a later attention input; the output is the mean of the lanes."""
    model = frontier_model(num_loops=0, loop_start=0, loop_end=0)
    seen = {}
    for i, b in enumerate(model.blocks[4:], start=4):
        b.attn.register_forward_pre_hook(lambda mod, inp, i=i: seen.__setitem__(i, inp[0].clone()))
    last, outputs = model.blocks[5], []
    forward_lanes = last.forward_lanes
    last.forward_lanes = lambda *a, **k: outputs.append(forward_lanes(*a, **k)) or outputs[-1]
    x = docs_batch()
    with torch.no_grad():
        for b in model.blocks[4:]:
            b.lane_lambdas.copy_(torch.eye(2))
        model(x)
        before = dict(seen)
        model.blocks[4].mlp.proj.weight.add_(1.0)
        logits = model(x)
        (lane0, lane1), _ = outputs[-1]
        assert torch.equal(seen[5], before[5])  # attention of layer 5 never saw layer 4's MLP
        assert not torch.allclose(lane0, lane1)
        assert torch.allclose(logits, model.head(0.5 * (lane0 + lane1)))


def test_loop_runs_layers_a_to_b_one_plus_n_times_without_parameters():
    assert loop_schedule(11, 3, 5, 2) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    model = frontier_model(num_layers=6, loop_start=1, loop_end=3, num_loops=2)
    calls = [0] * 6
    for i, b in enumerate(model.blocks):
        b.attn.register_forward_pre_hook(lambda mod, inp, i=i: calls.__setitem__(i, calls[i] + 1))
    with torch.no_grad():
        model(docs_batch())
    assert calls == [1, 3, 3, 3, 1, 1]
    plain = GPT(GPTConfig(**{**FRONTIER, "num_loops": 0}))
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())
    extra = (len(model.schedule) // 2 - 3) * 2 * 32  # only more U-Net skip weights and gates
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters()) == extra
    model.set_looping(False)
    assert model.schedule == list(range(6))


def test_x0_lane_lets_a_block_read_the_embedding_directly():
    """resid_mix (0, 1): block 3 reads x0 whatever blocks 0-2 did."""
    model = frontier_model(num_loops=0, parallel_start=0)
    seen = []
    model.blocks[3].attn.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].clone()))
    x = docs_batch()
    with torch.no_grad():
        model.blocks[3].resid_mix.copy_(torch.stack((torch.zeros(32), torch.ones(32))))
        model(x)
        model.blocks[1].mlp.fc.weight.mul_(3.0)
        model(x)
    assert torch.allclose(seen[0], seen[1], atol=1e-6)


def test_gated_skip_is_a_convex_mix_of_stream_and_weighted_skip():
    model = frontier_model()
    g = torch.Generator().manual_seed(4)
    x, skip = torch.randn(2, 5, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    with torch.no_grad():
        out = model.add_skip(x, skip, 0)
        w_skip = model.skip_weights[0] * skip
        lo, hi = torch.minimum(x, w_skip), torch.maximum(x, w_skip)
        assert ((out >= lo - 1e-6) & (out <= hi + 1e-6)).all()
        model.skip_gates.fill_(30.0)  # gate ~1: the skip is ignored
        assert torch.allclose(model.add_skip(x, skip, 0), x, atol=1e-6)
        model.skip_gates.fill_(-30.0)  # gate ~0: the stream is replaced by the weighted skip
        assert torch.allclose(model.add_skip(x, skip, 0), w_skip, atol=1e-6)


def test_separate_softcaps_bound_positive_and_negative_logits():
    model = frontier_model(logit_softcap=30.0, logit_softcap_neg=10.0)
    with torch.no_grad():
        model.tok_emb.weight.mul_(100)
        logits = model(docs_batch())
    assert 27 < logits.max() <= 30  # tanh saturates to exactly 1 in float32
    assert -10 <= logits.min() < -9


def test_artifact_config_leaves_out_switches_that_are_off():
    plain = GPTConfig(vocab_size=64)
    assert "attn_gate_width" not in artifact_model_config(plain) and "num_layers" in artifact_model_config(plain)
    cfg = GPTConfig(**FRONTIER)
    recorded = artifact_model_config(cfg)
    assert recorded["num_loops"] == 1 and GPTConfig(**recorded) == cfg


@pytest.mark.parametrize("bad, message", [
    (dict(parallel_start=6), "PARALLEL_START"), (dict(loop_end=6), "NUM_LOOPS"),
    (dict(recur_layers="1"), "RECUR_LAYERS"), (dict(logit_softcap=0.0), "LOGIT_SOFTCAP_NEG"),
    (dict(attn_gate_width=33), "ATTN_GATE_WIDTH"),
])
def test_frontier_config_errors_name_the_variable(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**FRONTIER, **bad})


def test_record_file_leaves_document_isolation_out():
    """The record preset does not isolate documents, so its file holds no docattn code and refuses
    the switch (the complete file keeps it)."""
    from lila_golf.tools.bundle import build_bundle
    assert "def doc_attention" not in build_bundle("record") and "def doc_attention" in build_bundle()
    assert "'doc_isolation': (False, 'document isolation')" in build_bundle("record")
