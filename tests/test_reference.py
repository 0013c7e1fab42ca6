"""Refactors change nothing: the generated train_gpt.py reproduces, bit for bit, the reference made
from main before the house refactor (tests/reference/make_reference.py): every step's loss, the
final float and roundtrip scores, and the artifact's sha256."""
import json

import pytest

from lila_golf.tools.bundle import REPO_ROOT
from reference.make_reference import REFERENCE, REFERENCE_RUNS, run_reference


@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_reference_run_is_reproduced_bit_for_bit(name, tmp_path, shared_data):
    expected = json.loads(REFERENCE.read_text())[name]
    got = run_reference(REPO_ROOT / "train_gpt.py", tmp_path, REFERENCE_RUNS[name])
    assert got["step_losses"] == expected["step_losses"]
    assert (got["final_float"], got["roundtrip"]) == (expected["final_float"], expected["roundtrip"])
    assert got["artifact_sha256"] == expected["artifact_sha256"]
