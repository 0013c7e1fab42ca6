"""The record path's rules: an exact clock, GPTQ inside it, the same global batch at 1..8 ranks,
resume that refuses what it cannot honour, and a 2-process smoke run ending with a valid artifact."""
import re

import pytest

from lila_golf.core.config import PRESETS, Hyperparameters
from lila_golf.core.data import DistributedTokenLoader, shard_file
from lila_golf.core.train import check_resume_config, micro_batches, resume_fingerprint, training_budget_ms, would_overrun
from test_train import run_script


def test_no_step_starts_that_would_end_past_the_budget():
    assert not would_overrun(0.0, [], 1000.0)             # the first step always runs
    assert not would_overrun(800.0, [90.0, 100.0], 1000.0)  # 800 + 100 = 900 fits
    assert would_overrun(901.0, [90.0, 100.0], 1000.0)      # 901 + 100 > 1000: stop before it
    assert would_overrun(850.0, [160.0, 100.0], 1000.0)     # the slowest recent step decides
    assert not would_overrun(10**9, [100.0], 0.0)           # no cap


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_global_batch_is_the_same_at_every_world_size(preset, world, mini_data):
    hp = Hyperparameters.from_env({"PRESET": preset})
    micro = micro_batches(hp.grad_accum_total, world)
    assert micro == max(1, hp.grad_accum_total // world)
    local = hp.train_batch_tokens // (world * micro) // hp.train_seq_len * hp.train_seq_len
    assert local * world * micro == hp.train_batch_tokens, "TRAIN_BATCH_TOKENS must split evenly"
    if hp.train_seq_len <= 512:  # the loader hands each rank exactly that share
        loader = DistributedTokenLoader(shard_file(mini_data, "train"), world - 1, world, hp.vocab_size)
        x, y = loader.next_batch(hp.train_batch_tokens, hp.train_seq_len, micro)
        assert x.numel() == local and y.shape == x.shape


def test_micro_batch_arithmetic():
    assert [micro_batches(8, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert [micro_batches(1, w) for w in (1, 2, 4, 8)] == [1, 1, 1, 1]


def test_resume_fingerprint_refuses_another_config():
    hp = Hyperparameters.from_env({"PRESET": "test"})
    saved = resume_fingerprint(hp, 1)
    check_resume_config(saved, resume_fingerprint(Hyperparameters.from_env({"PRESET": "test", "RESUME": "1", "RUN_ID": "x"}), 1), "c")
    with pytest.raises(ValueError, match="MATRIX_LR"):
        check_resume_config(saved, resume_fingerprint(Hyperparameters.from_env({"PRESET": "test", "MATRIX_LR": "0.1"}), 1), "c")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        check_resume_config(saved, resume_fingerprint(hp, 2), "c")


def test_resume_without_checkpoint_is_an_error_naming_the_path(tmp_path, mini_data, sp1024_model):
    proc, _ = run_script(tmp_path, mini_data, sp1024_model, {"RESUME": "1"}, run_id="nothing")
    assert proc.returncode != 0
    assert "no checkpoint at" in proc.stderr and "nothing" in proc.stderr and "checkpoint.lgck" in proc.stderr


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, mini_data, sp1024_model):
    first, _ = run_script(tmp_path, mini_data, sp1024_model, {"CHECKPOINT_EVERY": "5", "STOP_AT_STEP": "5"}, run_id="c")
    assert first.returncode == 0, first.stderr[-2000:]
    proc, _ = run_script(tmp_path, mini_data, sp1024_model, {"RESUME": "1", "MATRIX_LR": "0.02"}, run_id="c")
    assert proc.returncode != 0 and "different config" in proc.stderr and "MATRIX_LR" in proc.stderr


GPTQ_ENV = {"MODEL_DIM": "256", "NUM_LAYERS": "1", "QUANT_SCHEME": "int6_gptq", "GPTQ_CALIB_BATCHES": "2",
            "ITERATIONS": "1000", "VAL_MAX_TOKENS": "1024"}


def test_gptq_is_reserved_inside_the_clock(tmp_path, mini_data, sp1024_model):
    proc, log = run_script(tmp_path, mini_data, sp1024_model, {**GPTQ_ENV, "MAX_WALLCLOCK_SECONDS": "4"}, run_id="g")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    reserve = float(re.search(r"gptq_reserve_ms:(\S+) source:estimate", log).group(1))
    budget = float(re.search(r"train_budget_ms:(\S+)", log).group(1))
    train = float(re.search(r"train_steps:\d+ train_time_ms:(\S+)", log).group(1))
    assert reserve > 0 and budget == pytest.approx(4000 - reserve, abs=1)
    assert train <= budget  # the exact clock: no step ended past the training budget
    m = re.search(r"time_budget train_time_ms:(\d+) gptq_time_ms:(\d+) total_ms:(\d+) cap_ms:4000", log)
    assert m and int(m.group(3)) == pytest.approx(int(m.group(1)) + int(m.group(2)), abs=1)


def test_budget_driven_export_lands_under_the_budget_inside_the_clock(tmp_path, mini_data, sp1024_model):
    """QUANT_BUDGET_BYTES (the record presets use -1: 16 MB minus code minus margin): a budget that forces
    cuts below uniform int6's 235 KB; the reserve counts the allocation's rounds and coding."""
    env = {"QUANT_SCHEME": "int6_gptq", "QUANT_BUDGET_BYTES": "60000", "ITERATIONS": "6", "VAL_MAX_TOKENS": "4096",
           "MAX_WALLCLOCK_SECONDS": "300"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, run_id="budget")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"gptq_reserve_ms:\S+ source:estimate .* code_ms:\d+ rounds:5", log)
    m = re.search(r"quant_budget budget_bytes:60000 model_bytes:(\d+) exports:(\S+) widths:(\S+)", log)
    assert m and int(m.group(1)) <= 60000 and int(m.group(1)) > 0.99 * 60000  # just under the budget
    assert int(m.group(1)) in map(int, m.group(2).split(",")) and min(map(int, m.group(3).split(","))) < 6
    assert f"bytes_model:{m.group(1)} " in log and "artifact_valid:true" in log and "time_valid:true" in log
    for preset in ("record", "record_sp1024"):
        assert Hyperparameters.from_env({"PRESET": preset}).quant_budget_bytes == -1


def test_a_reserve_that_takes_the_whole_cap_is_refused(tmp_path, mini_data, sp1024_model):
    # seen on an H200: an estimated reserve of 68.9 s under a 40 s cap gave a negative budget, which
    # read as "no cap", and training ran on past the clock
    env = {**GPTQ_ENV, "MAX_WALLCLOCK_SECONDS": "2", "GPTQ_RESERVE_SECONDS": "3"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, run_id="reserve")
    assert proc.returncode != 0 and "step:1/" not in log
    assert "GPTQ reserve of 3.0 s leaves no training time under MAX_WALLCLOCK_SECONDS=2" in proc.stderr
    assert training_budget_ms(2, 1500) == 500 and training_budget_ms(0, 1500) == 0


def test_over_the_cap_still_writes_the_artifact_and_exits_1(tmp_path, mini_data, sp1024_model):
    env = {**GPTQ_ENV, "MAX_WALLCLOCK_SECONDS": "0.001", "GPTQ_RESERVE_SECONDS": "0"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, run_id="over")
    assert proc.returncode == 1
    assert "gptq_reserve_ms:0 source:GPTQ_RESERVE_SECONDS" in log
    assert re.search(r"time_valid:false over_cap_ms:\d+", log)
    assert re.search(r"final_int6_gptq_zlib_roundtrip val_loss:\S+", log)
    assert list((tmp_path / "runs" / "over").glob("final_model.*"))


def test_smoke_preset_runs_on_two_processes(tmp_path, mini_data, sp1024_model):
    """GRAD_ACCUM_TOTAL=1 with 2 ranks: one micro-batch each, the same global batch."""
    env = {"PRESET": "smoke", "ITERATIONS": "4", "VAL_LOSS_EVERY": "0", "VAL_MAX_TOKENS": "4096",
           "MAX_WALLCLOCK_SECONDS": "0"}
    proc, log = run_script(tmp_path, mini_data, sp1024_model, env, nproc=2, run_id="smoke2")
    # where rank 0 got to, and the start of stderr (a rank's own traceback precedes torchrun's)
    assert proc.returncode == 0, f"log tail:\n{log[-1500:]}\nstderr head:\n{proc.stderr[:3000]}"
    assert "world_size:2" in log and "artifact_valid:true" in log
    assert re.search(r"final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+ tokens:4096", log)
