"""Every collective goes through lila_golf/core/collectives.py, which puts tensors on the backend's
device; the distributed GPTQ export survives a group that refuses misplaced tensors (as NCCL does)
and gives the same artifact bytes at 1 and 2 processes."""
import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lila_golf.core.collectives as collectives
from lila_golf.tools.bundle import CORE_DIR, build_bundle

WORKER = Path(__file__).with_name("_export_dist_worker.py")
COLLECTIVE_CALLS = {"all_reduce", "broadcast", "barrier", "all_gather", "all_gather_into_tensor", "reduce_scatter",
                    "reduce_scatter_tensor", "gather", "scatter", "send", "recv", "all_to_all", "reduce",
                    "init_process_group", "destroy_process_group"}


def direct_collectives(source: str) -> list[str]:
    """`dist.<collective>(...)` calls outside the collectives helpers."""
    tree, found = ast.parse(source), []
    helpers = {n.name for n in ast.parse((CORE_DIR / "collectives.py").read_text()).body if isinstance(n, ast.FunctionDef)}
    for fn in [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]:
        if fn.name in helpers:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVE_CALLS \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "dist":
                found.append(f"{fn.name}: dist.{node.func.attr}")
    return found


def test_bundled_code_calls_collectives_only_through_the_helpers():
    assert direct_collectives(build_bundle()) == []
    assert direct_collectives(build_bundle("record")) == []


def test_direct_call_is_found():
    assert direct_collectives("def export(h):\n    dist.all_reduce(h)\n") == ["export: dist.all_reduce"]


def test_backend_device_is_the_gpu_for_nccl(monkeypatch):
    monkeypatch.setattr(collectives.dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(collectives.torch.cuda, "current_device", lambda: 3)
    assert collectives.backend_device() == torch.device("cuda", 3)
    monkeypatch.setattr(collectives.dist, "get_backend", lambda *a: "gloo")
    assert collectives.backend_device() == torch.device("cpu")


def test_helpers_are_identity_in_one_process():
    t = torch.arange(4.0)
    assert collectives.all_reduce_(t) is t and torch.equal(t, torch.arange(4.0))
    assert collectives.broadcast_bytes(b"abc") == b"abc"
    with pytest.raises(ValueError, match="op"):
        collectives.all_reduce_(t, op="mean")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(world: int, out: Path, mini_data, sp1024_model, mode: str = "") -> None:
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(mini_data), str(sp1024_model), mode],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def test_distributed_gptq_export_under_fake_nccl_matches_one_process(tmp_path, mini_data, sp1024_model):
    run_workers(1, tmp_path / "one", mini_data, sp1024_model)
    run_workers(2, tmp_path / "two", mini_data, sp1024_model, "fake_nccl")
    one = (tmp_path / "one" / "rank0" / "final.lgz").read_bytes()
    assert "gptq_time_ms:" in (tmp_path / "one" / "rank0" / "log.txt").read_text()
    # byte-identical at 1 and 2 processes, and rank 1 (its own folder) holds rank 0's file
    assert (tmp_path / "two" / "rank0" / "final.lgz").read_bytes() == one
    assert (tmp_path / "two" / "rank1" / "final.lgz").read_bytes() == one
