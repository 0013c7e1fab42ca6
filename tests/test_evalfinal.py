"""eval --final: seq_len from the artifact header (never a silent default), the same eval_phase and
final_submitted lines from one process and from torchrun with 2 gloo processes; eval --plan prints
a labelled projection for every enabled phase."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lila_golf.core.artifact import read_artifact_header, save_artifact
from lila_golf.core.data import read_shard, tokenizer_sha256, write_shard
from lila_golf.tools.evalcmd import main

from test_evalcmd import TINY, tiny_model

SEQ_LEN = 32
SETS = ["EVAL_STRIDE=16", "TTT_MODE=phased", "TTT_CHUNK=16", "TTT_BATCH_DOCS=4", "TTT_PHASES=2", "TTT_PHASE_DOCS=4",
        "TTT_PHASE_BATCH=8", "TTT_RANK=4", "TTT_LR=0.01", "NGRAM_ORDER=6", "VAL_BATCH_TOKENS=512"]
PHASE = re.compile(r"^eval_phase name:(\S+) val_loss:(\S+) val_bpb:(\S+) targets:(\d+) bytes:(\d+)", re.M)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory, sp1024_model, mini_data):
    """A bare artifact (no config.json) whose header carries train_seq_len, and a 2,500-token val shard."""
    folder = tmp_path_factory.mktemp("art")
    model = tiny_model()
    state = {k: v.float() for k, v in model.state_dict().items()}
    for name, seq_len in (("with_len.lgz", SEQ_LEN), ("without_len.lgz", None)):
        save_artifact(folder / name, state, model_config=model.cfg.__dict__, tokenizer_sha256=tokenizer_sha256(sp1024_model),
                      scheme="int8", codec="zlib", train_seq_len=seq_len)
    write_shard(folder / "fineweb_val_000000.bin", read_shard(mini_data / "fineweb_val_000000.bin")[:2500])
    return folder


def final_args(folder, sp1024_model, artifact="with_len.lgz"):
    args = [str(folder / artifact), "--final", "--quiet", "--data-path", str(folder / "fineweb_val_000000.bin"),
            "--tokenizer", str(sp1024_model)]
    for s in SETS:
        args += ["--set", s]
    return args


def phases(out: str) -> dict:
    return {m[0]: tuple(float(v) for v in m[1:]) for m in PHASE.findall(out)}


def test_header_carries_seq_len_and_none_is_never_guessed(artifact_dir, sp1024_model, capsys):
    assert read_artifact_header(artifact_dir / "with_len.lgz")["train_seq_len"] == SEQ_LEN
    assert "train_seq_len" not in read_artifact_header(artifact_dir / "without_len.lgz")
    assert main(final_args(artifact_dir, sp1024_model, "without_len.lgz")) == 2
    assert "--seq-len" in capsys.readouterr().err


def test_torchrun_two_processes_give_one_process_lines(artifact_dir, sp1024_model, capsys):
    assert main(final_args(artifact_dir, sp1024_model)) == 0
    out = capsys.readouterr().out
    one = phases(out)
    assert list(one) == ["plain", "sliding", "ttt", "ngram"] and all(v[2] == 2499 for v in one.values())
    assert "seq_len:32 seq_len_from:artifact_header" in out
    assert re.search(r"^final_submitted .* phases:plain,sliding,ttt,ngram$", out, re.M)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lila_golf", "eval",
           *final_args(artifact_dir, sp1024_model)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = phases(proc.stdout)
    assert "world_size:2" in proc.stdout and list(two) == list(one)
    for name in one:
        assert two[name][2:] == one[name][2:]  # targets, bytes
        # plain, sliding: the same windows on other ranks; ttt: documents in other batches (padding
        # changes float32 rounding); the n-gram phase adds nothing rank-dependent
        assert abs(two[name][0] - one[name][0]) < 1e-6, (name, one[name], two[name])


def test_plan_prints_a_projection_for_each_phase(mini_data, capsys):
    rc = main(["--plan", "--preset", "record", "--world-size", "8", "--data-path", str(mini_data / "fineweb_val_000000.bin"),
               "--sample-tokens", "50000", "--set", "EVAL_STRIDE=64", "--set", "TTT_MODE=phased", "--set", "NGRAM_ORDER=8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("eval_plan PROJECTION")
    for name in ("plain", "sliding", "ttt", "ngram"):
        assert re.search(rf"^eval_plan phase:{name} .*seconds:\d", out, re.M), out
    assert re.search(r"^eval_plan total_seconds:\S+ budget_seconds:600 fits:(True|False) \(PROJECTION\)$", out, re.M)
