"""train_gpt.py is generated from lila_golf/core: fresh, only what main() reaches, in reading order,
self-contained, within its budgets; the record file holds only what the record preset runs."""
import ast
import json
import os
import re
import subprocess
import sys

import pytest

from lila_golf.tools.bundle import REPO_ROOT, SECTIONS, BundleError, build_bundle, build_file, parse_module, unpack
from reference.make_reference import REFERENCE, REFERENCE_RUNS, run_reference

# budgets, stated in the README; raise one only with a reason written there
COMPLETE_MAX_LINES, COMPLETE_MAX_BYTES = 5_500, 275_000
RECORD_MAX_LINES, RECORD_MAX_BYTES, RECORD_MAX_PACKED = 4_300, 225_000, 50_000


def top_level_defs(tree: ast.Module) -> dict[str, ast.stmt]:
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                out.update({n.id: node for n in ast.walk(t) if isinstance(n, ast.Name)})
    return out


def unreachable_from_main(source: str) -> set[str]:
    """Top-level names of a file that main() cannot reach through the names it uses (any use,
    annotations included: a stricter reading than the bundler's)."""
    defs = top_level_defs(ast.parse(source))
    seen, stack = set(), ["main"]
    while stack:
        name = stack.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        stack.extend(n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name))
    return set(defs) - seen


def test_committed_file_equals_fresh_bundle():
    committed = (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8")
    assert committed == build_bundle(), "train_gpt.py is stale: run `python -m lila_golf bundle`"


@pytest.mark.parametrize("preset", [None, "record"])
def test_only_definitions_main_reaches_are_bundled(preset):
    assert unreachable_from_main(build_bundle(preset)) == set()


def test_unreachability_check_can_fail():
    assert unreachable_from_main(build_bundle() + "\n\ndef orphan():\n    return 1\n") == {"orphan"}


def test_sections_come_in_reading_order():
    text = build_bundle()
    banners = re.findall(r"^# =+ (.+?) =+$", text, re.M)
    order = [s for s, _ in SECTIONS] + ["main"]
    assert banners == [s for s in order if s in banners]
    assert banners[0] == "hyperparameters" and banners[-1] == "main"
    assert text.index("class Hyperparameters") < text.index("def main(")


def test_budgets_hold():
    complete, record = build_bundle(), build_bundle("record")
    assert complete.count("\n") <= COMPLETE_MAX_LINES and len(complete.encode()) <= COMPLETE_MAX_BYTES
    assert record.count("\n") <= RECORD_MAX_LINES and len(record.encode()) <= RECORD_MAX_BYTES
    assert len(build_file("record", packed=True, minified=True).encode()) <= RECORD_MAX_PACKED


def test_record_file_leaves_geometry_out_and_complete_file_keeps_it():
    complete, record = build_bundle(), build_bundle("record")
    for name in ("class E8AttentionBias", "class LeechMetric", "def leech_resonance_loss", "def weight_telemetry"):
        assert name in complete and name not in record


def test_no_package_imports_and_no_outside_paths():
    for preset in (None, "record"):
        text = build_bundle(preset)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("lila_golf"), ast.unparse(node)
        assert "../shared" not in text and "/work/" not in text


def test_multiline_relative_import_and_import_time_work_are_refused():
    with pytest.raises(BundleError, match="single-line"):
        parse_module("x", "from .data import (\n    a,\n)\n")
    with pytest.raises(BundleError, match="import-time work"):
        parse_module("x", "import torch\ntorch.manual_seed(0)\n")


def run_file(tmp_path, text, env, name="train_gpt.py"):
    script = tmp_path / name
    script.write_text(text)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "OUT_DIR": str(tmp_path / "runs"), **env}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-I", str(script)], env=full_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)


def test_standalone_copy_finishes_smoke(tmp_path, mini_data, sp1024_model):
    """Copied alone into an empty folder, the file trains (smoke preset, shortened) and exports."""
    env = {"PRESET": "smoke", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model),
           "ITERATIONS": "12", "VAL_LOSS_EVERY": "6", "VAL_MAX_TOKENS": "8192", "RUN_ID": "smoke",
           "MAX_WALLCLOCK_SECONDS": "0"}
    proc = run_file(tmp_path, (REPO_ROOT / "train_gpt.py").read_text(), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "runs" / "smoke" / "train.log").read_text()
    assert "step:12/12 val_loss:" in log
    assert re.search(r"final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+", log)


def test_packed_minified_record_file_reproduces_the_reference(tmp_path, shared_data):
    """The file a record submits (record preset only, minified, packed) runs the reference's
    record-switch configuration with the same losses and the same artifact bytes."""
    packed = build_file("record", packed=True, minified=True)
    assert len(unpack(packed)) > 3 * len(packed)
    script = tmp_path / "train_gpt.py"
    script.write_text(packed)
    name = "test_record_switches"
    got = run_reference(script, tmp_path, REFERENCE_RUNS[name])
    expected = json.loads(REFERENCE.read_text())[name]
    assert got["step_losses"] == expected["step_losses"]
    assert got["artifact_sha256"] == expected["artifact_sha256"]


def test_record_file_refuses_a_left_out_switch(tmp_path, mini_data, sp1024_model):
    env = {"PRESET": "test", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model),
           "ATTN_GEOMETRY": "leech_metric", "MODEL_DIM": "96", "NUM_HEADS": "4"}
    proc = run_file(tmp_path, build_bundle("record"), env)
    assert proc.returncode != 0
    assert "ATTN_GEOMETRY='leech_metric' switches on lattice geometry" in proc.stderr
    assert "complete train_gpt.py" in proc.stderr
