"""train_gpt.py is generated from the package: fresh, self-contained, within its budget."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lila_golf.bundle import REPO_ROOT, BundleError, build_bundle, strip_module

MAX_LINES, MAX_BYTES = 5000, 250_000  # stated in the README


def test_committed_file_equals_fresh_bundle():
    committed = (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8")
    assert committed == build_bundle(), "train_gpt.py is stale: run `python -m lila_golf bundle`"


def test_budget_holds():
    text = build_bundle()
    assert text.count("\n") <= MAX_LINES
    assert len(text.encode()) <= MAX_BYTES


def test_bundle_has_no_package_imports():
    import ast
    tree = ast.parse(build_bundle())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("lila_golf"), ast.unparse(node)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("lila_golf") for a in node.names), ast.unparse(node)


def test_multiline_relative_import_is_refused():
    with pytest.raises(BundleError, match="single-line"):
        strip_module("x", "from .data import (\n    a,\n)\n")


def test_standalone_copy_finishes_smoke(tmp_path, mini_data, sp1024_model):
    """Copied alone into an empty folder, the file trains (smoke preset, shortened) and exports."""
    script = tmp_path / "train_gpt.py"
    script.write_bytes((REPO_ROOT / "train_gpt.py").read_bytes())
    env = {**os.environ, "PRESET": "smoke", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model),
           "ITERATIONS": "12", "VAL_LOSS_EVERY": "6", "VAL_MAX_TOKENS": "8192", "RUN_ID": "smoke",
           "MAX_WALLCLOCK_SECONDS": "0"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-I", str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "runs" / "smoke" / "train.log").read_text()
    assert "step:12/12 val_loss:" in log
    assert re.search(r"final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+", log)
    assert list((tmp_path / "runs" / "smoke").glob("final_model.*"))


def test_packed_file_decodes_to_readable_and_runs(tmp_path, mini_data, sp1024_model):
    from lila_golf.bundle import minify, pack, unpack
    readable = build_bundle()
    assert unpack(pack(readable)) == readable
    packed = pack(minify(readable))
    assert len(packed) < len(readable) // 2
    script = tmp_path / "train_gpt.py"
    script.write_text(packed)
    env = {**os.environ, "PRESET": "test", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model),
           "ITERATIONS": "3", "VAL_MAX_TOKENS": "1024", "RUN_ID": "packed"}
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "runs" / "packed" / "train.log").read_text()
    # the code bytes counted are those of the packed file that ran
    assert f"bytes_code:{len(packed.encode())}" in log
    assert re.search(r"final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+", log)
