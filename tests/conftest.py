"""Shared fixtures: the real FineWeb data in ../shared/data (skipped when absent, required under CI)."""
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared data folder {SHARED_DATA} is missing")
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sp1024_model(shared_data) -> Path:
    return shared_data / "tokenizers" / "fineweb_1024_bpe.model"


@pytest.fixture(scope="session")
def mini_data(shared_data) -> Path:
    return shared_data / "fineweb10B_sp1024_mini"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many tiny ops (GPTQ column loops, toy models): one thread is faster than two, and far faster
    on a shared, loaded machine. Modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
