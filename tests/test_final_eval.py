"""The final evaluation: every phase scores every target, logs its line and the submitted line, the
plain phase agrees with eval_val_plain, and two gloo processes give one process's result for every
phase (plain, sliding, per-document and phased TTT, n-gram mixing)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lila_golf.core.config import Hyperparameters
from lila_golf.core.data import ByteTables
from lila_golf.core.evaluate import eval_val_plain
from lila_golf.core.final_eval import final_evaluation, ttt_phase_bounds
from lila_golf.core.model import GPT, GPTConfig

V, BOS = 64, 1
TESTS_DIR = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2))
    with torch.no_grad():  # spread the untrained logits out
        model.tok_emb.weight.normal_(0, 0.3)
        for p in model.parameters():
            if p.ndim == 2 and p is not model.tok_emb.weight:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def val_stream(n=1403, seed=0) -> np.ndarray:
    """Documents (BOS + ids) with a repeated phrase; n is not a multiple of any window length."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, V, size=n)
    tokens[np.sort(rng.choice(np.arange(1, n - 5), size=14, replace=False))] = BOS
    tokens[0] = BOS
    tokens[600:680] = tokens[300:380]
    return tokens


def byte_tables() -> ByteTables:
    base = np.arange(V, dtype=np.int16) % 3 + 1
    boundary = np.zeros(V, dtype=bool)
    boundary[BOS] = True
    base[BOS] = 0
    return ByteTables(base, np.arange(V) % 2 == 0, boundary, BOS)


def eval_hp(**kw) -> Hyperparameters:
    values = dict(vocab_size=V, train_seq_len=32, val_batch_tokens=128, eval_stride=8, ttt_mode="phased", ttt_chunk=8,
                  ttt_lr=0.01, ttt_rank=4, ttt_batch_docs=3, ttt_phases=2, ttt_phase_docs=6, ttt_phase_lr=0.05,
                  ttt_phase_batch=4, ngram_order=5, ngram_mix_chunk=64)
    hp = Hyperparameters(**{**values, **kw})
    hp.validate()
    return hp


def run_final(hp, lines=None):
    log = (lines.append if lines is not None else (lambda line: None))
    return final_evaluation(tiny_model(), val_stream(), byte_tables(), hp, torch.device("cpu"), None, log)


def test_every_phase_scores_every_target_and_logs_the_submitted_line():
    lines = []
    res = run_final(eval_hp(), lines)
    names = [r["name"] for r in res["phases"]]
    assert names == ["plain", "sliding", "ttt", "ngram"]
    assert all(r["targets"] == len(val_stream()) - 1 for r in res["phases"])
    assert len({r["bytes"] for r in res["phases"]}) == 1
    phase_lines = [l for l in lines if l.startswith("eval_phase ")]
    assert [l.split()[1] for l in phase_lines] == [f"name:{n}" for n in names]
    for key in ("val_loss:", "val_bpb:", "targets:1402", "bytes:", "time_ms:"):
        assert all(key in l for l in phase_lines)
    sub = lines[-1]
    assert sub.startswith("final_submitted ") and "phases:plain,sliding,ttt,ngram" in sub and "eval_time_ms:" in sub
    assert res["submitted"]["val_bpb"] == res["phases"][-1]["val_bpb"]
    assert f"val_bpb:{res['phases'][-1]['val_bpb']:.8f}" in sub


def test_phases_follow_the_config_and_the_model_is_left_unchanged():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = final_evaluation(model, val_stream(), byte_tables(), eval_hp(eval_stride=0, ngram_order=0),
                           torch.device("cpu"), None, lambda line: None)
    assert [r["name"] for r in res["phases"]] == ["plain", "ttt"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # phased SGD undone
    res = run_final(eval_hp(eval_stride=0, ttt_mode="off", ngram_order=0))
    assert res["submitted"]["phases"] == ["plain"]


def test_plain_phase_agrees_with_eval_val_plain():
    tokens, tables = val_stream(), byte_tables()
    from lila_golf.core.data import target_bytes
    ref = eval_val_plain(tiny_model(), tokens, target_bytes(tokens[:-1], tokens[1:], tables), 32, "cpu", batch_seqs=4)
    plain = run_final(eval_hp(eval_stride=0, ttt_mode="off", ngram_order=0))["phases"][0]
    assert plain["targets"] == ref["tokens"] and plain["bytes"] == ref["bytes"]
    assert abs(plain["val_loss"] - ref["val_loss"]) < 1e-6


def test_the_ngram_phase_helps_on_repeated_text():
    res = {r["name"]: r for r in run_final(eval_hp())["phases"]}
    assert res["ngram"]["val_loss"] < res["ttt"]["val_loss"] - 0.01


def test_phase_bounds_are_a_fixed_grid_of_document_counts():
    assert ttt_phase_bounds(100, 0, 60) == [100]
    assert ttt_phase_bounds(100, 3, 60) == [20, 40, 60, 100]
    assert ttt_phase_bounds(30, 3, 60) == [20, 30]  # the grid does not depend on how many documents follow


def test_bad_eval_config_names_the_variable():
    with pytest.raises(ValueError, match="TTT_MODE"):
        eval_hp(ttt_mode="batch")
    with pytest.raises(ValueError, match="EVAL_STRIDE"):
        eval_hp(eval_stride=64)
    with pytest.raises(ValueError, match="TTT_PHASE_DOCS"):
        eval_hp(ttt_phase_docs=1)
    with pytest.raises(ValueError, match="NGRAM_ORDER"):
        eval_hp(ngram_order=-1)


def dist_worker(out_path: str) -> None:
    """One rank of the world-size test: the full final evaluation under gloo."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    res = run_final(eval_hp())
    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(res))
    dist.barrier()  # no rank leaves gloo while its peer still talks (teardown abort)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_one_process_result_for_every_phase(tmp_path):
    ref = run_final(eval_hp())
    port, procs = str(_free_port()), []
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_final_eval; test_final_eval.dist_worker(sys.argv[1])"
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "res.json")], env=env,
                                      cwd=TESTS_DIR.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    got = json.loads((tmp_path / "res.json").read_text())
    for mine, theirs in zip(ref["phases"], got["phases"]):
        assert mine["name"] == theirs["name"] and mine["targets"] == theirs["targets"] and mine["bytes"] == theirs["bytes"]
        if mine["name"] in ("plain", "sliding"):  # the same windows: bit for bit
            assert mine["val_loss"] == theirs["val_loss"], (mine, theirs)
        else:  # the same documents in other batches (padding changes float32 rounding): ~4e-8 measured
            assert abs(mine["val_loss"] - theirs["val_loss"]) < 1e-6, (mine, theirs)
    assert got["submitted"]["phases"] == ref["submitted"]["phases"]


def test_bytes_from_a_sidecar_replace_the_tables():
    tokens = val_stream()
    counts = np.full(len(tokens) - 1, 3)
    res = final_evaluation(tiny_model(), tokens, byte_tables(), eval_hp(eval_stride=0, ttt_mode="off", ngram_order=0),
                           torch.device("cpu"), None, lambda line: None, target_byte_counts=counts)
    assert res["submitted"]["bytes"] == 3 * (len(tokens) - 1)
    with pytest.raises(ValueError, match="target_byte_counts"):
        final_evaluation(tiny_model(), tokens, byte_tables(), eval_hp(), torch.device("cpu"), None, print,
                         target_byte_counts=counts[:-1])
