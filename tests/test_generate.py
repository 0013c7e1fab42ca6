"""generate: artifact loading (no pickle, tokenizer hash), sliding context, sampling, E8 resonator."""
import argparse
import json

import pytest
import torch

from lila_golf.core.artifact import ArtifactError, save_artifact
from lila_golf.core.data import tokenizer_sha256
from lila_golf.tools.generate import (E8Resonator, GenerateError, add_generate_parser, apply_repetition_penalty,
                                generate_tokens, load_model, next_token_logits, run_generate, sample_next,
                                token_roots)
from lila_golf.core.lattice import e8_roots
from lila_golf.core.model import GPT, GPTConfig

TINY = dict(vocab_size=1024, num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)


def tiny_model(seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**TINY))
    with torch.no_grad():  # untrained weights give near-uniform logits: spread them out
        model.tok_emb.weight.normal_(0, 1.0)
        for p in model.parameters():
            if p.ndim == 2 and p is not model.tok_emb.weight:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, sp1024_model):
    """A tiny untrained model saved the way training saves it, with its run config beside it."""
    folder = tmp_path_factory.mktemp("run")
    model = tiny_model()
    path = folder / "final_model.int8.zlib.lgz"
    save_artifact(path, {k: v.float() for k, v in model.state_dict().items()}, model_config=model.cfg.__dict__,
                  tokenizer_sha256=tokenizer_sha256(sp1024_model), scheme="int8", codec="zlib")
    (folder / "config.json").write_text(json.dumps({"tokenizer_path": str(sp1024_model), "train_seq_len": 16}))
    return path


def parse(argv):
    parser = argparse.ArgumentParser()
    add_generate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["generate", *argv])


def test_underscore_and_dash_flags_parse_the_same():
    common = ["--artifact", "a.lgz", "--prompt", "hi"]
    dash = parse(common + ["--max-tokens", "7", "--top-k", "5", "--top-p", "0.9", "--repetition-penalty", "1.2",
                           "--repetition-window", "9", "--no-resonator", "--resonance-strength", "2",
                           "--encode-relation-weight", "0.5", "--show-resonance", "--seq-len", "32"])
    under = parse(common + ["--max_tokens", "7", "--top_k", "5", "--top_p", "0.9", "--repetition_penalty", "1.2",
                            "--repetition_window", "9", "--no_resonator", "--resonance_strength", "2",
                            "--encode_relation_weight", "0.5", "--show_resonance", "--seq_len", "32"])
    assert vars(dash) == vars(under)
    assert (dash.max_tokens, dash.top_k, dash.no_resonator, dash.encode_relation_weight) == (7, 5, True, 0.5)


def test_artifact_loads_and_reproduces_logits(artifact, sp1024_model):
    model, header = load_model(artifact, sp1024_model)
    ref = tiny_model()
    x = torch.randint(0, 1024, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(x) - ref(x)).abs().max()
    assert diff < 0.2 and header["model_config"]["model_dim"] == 32  # int8 round trip


def test_wrong_tokenizer_is_refused(artifact, tmp_path):
    other = tmp_path / "other.model"
    other.write_bytes(b"not the tokenizer")
    with pytest.raises(ArtifactError, match="tokenizer mismatch"):
        load_model(artifact, other)


def test_resonance_strength_zero_equals_no_resonator(artifact, sp1024_model, capsys):
    base = ["--artifact", str(artifact), "--prompt", "The city of", "--max_tokens", "24", "--seed", "3",
            "--temperature", "1.0", "--top_k", "50"]
    assert run_generate(parse(base + ["--no_resonator"])) == 0
    off = capsys.readouterr().out
    assert run_generate(parse(base + ["--resonance_strength", "0"])) == 0
    zero = capsys.readouterr().out
    assert run_generate(parse(base + ["--resonance_strength", "8", "--show_resonance"])) == 0
    strong = capsys.readouterr().out
    assert off == zero and off.startswith("The city of")
    assert strong.count("resonance step:") == 24 and strong.splitlines()[-1] != off.strip()


def test_nonzero_strength_changes_some_logits_only():
    model = tiny_model()
    ids = [1, 5, 9, 5, 9, 5, 9, 100]
    resonator = E8Resonator(model.tok_emb.weight)
    resonator.observe_sequence(ids[1:], 1.0)
    plain = next_token_logits(model, ids, 16)
    zero = next_token_logits(model, ids, 16, resonator=resonator, resonance_strength=0.0)
    assert torch.equal(plain, zero)
    resonator.observe(100, 5)  # root(100) now has a successor
    biased = next_token_logits(model, ids, 16, resonator=resonator, resonance_strength=2.0)
    changed = (biased - plain).abs() > 1e-6
    assert 0 < int(changed.sum()) < 1024
    assert changed[5] and torch.isclose(biased[5] - plain[5], torch.tensor(2.0))  # observed successor: full bonus


def test_resonator_roots_and_graph():
    model = tiny_model()
    roots = token_roots(model.tok_emb.weight)
    assert roots.shape == (1024,) and roots.min() >= 0 and roots.max() < 240
    assert len(roots.unique()) > 50  # whitened PCA spreads tokens over many roots
    resonator = E8Resonator(model.tok_emb.weight)
    assert torch.all(resonator.adjacency.sum(1) == 56)
    a, b = 10, 20
    resonator.observe(a, b, 3.0)
    field = resonator.field(a)
    rb = resonator.token_root[b]
    assert field[rb] == 1.0
    R = torch.tensor(e8_roots())
    neighbours = (R @ R[rb]).round() == 1
    assert torch.allclose(field[neighbours], torch.full((56,), 0.5 / 56, dtype=torch.float64), atol=1e-12)
    assert field[~neighbours].sum() == 1.0  # nothing else resonates
    unseen = int((roots != roots[a]).nonzero()[0])
    assert torch.equal(resonator.field(unseen), torch.zeros(240, dtype=torch.float64))


def test_sliding_context_past_training_length():
    model, seen = tiny_model(), []
    model.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape[1]))
    new = generate_tokens(model, [1, 7, 8], max_tokens=20, seq_len=8, temperature=0.0)
    assert len(new) == 20 and max(seen) == 8 and seen[:6] == [3, 4, 5, 6, 7, 8]
    # greedy with a sliding window equals the argmax of the model on the last 8 tokens
    ids = [1, 7, 8] + new
    with torch.no_grad():
        last = model(torch.tensor([ids[-9:-1]]))[0, -1].argmax()
    assert int(last) == ids[-1]


def test_sampling_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    assert {sample_next(logits, 1.0, 2, 1.0, g) for _ in range(200)} == {0, 1}
    # softmax mass of token 0 is ~0.64 < 0.7, so the nucleus is {0, 1}
    assert {sample_next(logits, 1.0, 0, 0.7, g) for _ in range(200)} == {0, 1}
    assert sample_next(logits, 0.0, 0, 1.0, g) == 0
    penalised = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), [0, 1, 0], 2.0)
    assert penalised.tolist() == [1.0, -4.0, 1.0]


def test_bad_inputs_are_clear_errors(artifact, capsys):
    with pytest.raises(GenerateError, match="empty prompt"):
        generate_tokens(tiny_model(), [], max_tokens=1, seq_len=4)
    assert run_generate(parse(["--artifact", str(artifact), "--tokenizer", "/nonexistent.model"])) == 2
    assert "--tokenizer /nonexistent.model: file not found" in capsys.readouterr().err
    assert run_generate(parse(["--artifact", str(artifact), "--top_p", "0"])) == 2


@pytest.mark.parametrize("geometry", [dict(attn_geometry="leech_frozen", e8_sidebranch="st"),
                                      dict(attn_geometry="e8", e8_adapter=True, e8_sidebranch="soft")])
def test_geometry_models_round_trip_through_the_artifact(tmp_path, sp1024_model, geometry):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "model_dim": 48, **geometry})).eval()
    path = tmp_path / "geo.lgz"
    save_artifact(path, dict(model.state_dict()), model_config=model.cfg.__dict__,
                  tokenizer_sha256=tokenizer_sha256(sp1024_model), scheme="int8", codec="zlib")
    loaded, _ = load_model(path, sp1024_model)
    x = torch.randint(0, 1024, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 0.05
    assert len(generate_tokens(loaded, [1, 5], max_tokens=3, seq_len=4, resonator=E8Resonator(loaded.tok_emb.weight),
                               resonance_strength=1.0)) == 3


def test_prompt_and_continuation_print_as_the_tokenizer_joins_them(artifact, sp1024_model, monkeypatch, capsys):
    import sentencepiece
    import lila_golf.tools.generate as gen
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp1024_model))
    whole, prompt = sp.encode("voted in the house"), sp.encode("voted")
    assert whole[:len(prompt)] == prompt
    continuation = whole[len(prompt):]  # starts with "▁in": a space the prompt text does not end with
    assert sp.id_to_piece(continuation[0]) == "\u2581in"
    monkeypatch.setattr(gen, "generate_tokens", lambda *a, **k: list(continuation))
    assert run_generate(parse(["--artifact", str(artifact), "--prompt", "voted", "--no_resonator"])) == 0
    assert capsys.readouterr().out == "voted in the house\n"


def test_model_config_that_does_not_fit_the_weights_is_refused_before_allocating(artifact, tmp_path, sp1024_model):
    from lila_golf.core.artifact import load_artifact
    state, header = load_artifact(artifact)
    huge = tmp_path / "huge.lgz"
    cfg = {**header["model_config"], "num_layers": 3, "model_dim": 64}  # checked on the meta device: a
    save_artifact(huge, state, model_config=cfg,  # header asking for 10^11 weights is refused the same way
                  tokenizer_sha256=tokenizer_sha256(sp1024_model), scheme="int8", codec="zlib")
    with pytest.raises(GenerateError, match="do not fit"):
        load_model(huge, sp1024_model)
