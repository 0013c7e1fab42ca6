"""`preflight` checks a record run's inputs and budgets without training."""
from lila_golf.core.config import Hyperparameters
from lila_golf.tools.preflight import collectives_in_bundle, preflight


def verdicts(rows):
    return {name: verdict for verdict, name, _ in rows}


def test_record_preset_on_the_mini_data_passes(mini_data, sp1024_model):
    hp = Hyperparameters.from_env({"PRESET": "record_sp1024", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model)})
    rows = preflight(hp, 8, 20.0)
    v = verdicts(rows)
    assert "FAIL" not in v.values(), rows
    detail = {name: d for _, name, d in rows}
    assert "targets:131071 bytes:315257" in detail["val"]
    assert detail["step_budget"].startswith("training 580.0 s")
    assert "786432 tokens = 8 ranks x 1 micro-batches x 98304 tokens" in detail["global_batch"]


def test_missing_data_and_tokenizer_fail_by_name(tmp_path):
    hp = Hyperparameters.from_env({"PRESET": "record", "DATA_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path / "t.model")})
    v = verdicts(preflight(hp, 8, 20.0))
    assert v["val_shards"] == v["train_shards"] == v["tokenizer"] == "FAIL"


def test_collective_list_names_the_gptq_and_artifact_paths():
    found = collectives_in_bundle("record")
    assert "quantize_state_across_ranks:broadcast_bytes" in found and "share_artifact:broadcast_bytes" in found
    assert "Muon:all_reduce_" in found


def test_the_measured_projection_matches_its_preset_parameter_count():
    """benchmarks/results/record_export.json was measured on a preset's exact shape: if the preset
    changes shape, the projection is stale and this fails (rerun benchmarks/record_export.py)."""
    import json
    from lila_golf.tools.preflight import PROJECTION, count_params
    measured = json.loads(PROJECTION.read_text())
    hp = Hyperparameters.from_env({"PRESET": measured["preset"]})
    assert count_params(hp) == int(measured["model_params"])
