"""What truly needs CUDA: NCCL's refusal of CPU tensors and our collectives under it, the GPTQ
export on the GPU, torch.compile + bf16 on the GPU. Skipped without CUDA (the CPU proofs are in
test_compile.py and test_collectives.py); run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
import socket

import pytest
import torch
import torch.distributed as dist

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL, GPU kernels)")


@pytest.fixture
def nccl_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@needs_cuda
def test_nccl_refuses_cpu_tensors_and_the_helpers_move_them(nccl_group):
    from lila_golf.core.collectives import all_reduce_, broadcast_bytes
    with pytest.raises(Exception):
        dist.all_reduce(torch.ones(3))  # the crash today's code would hit after 600 s
        torch.cuda.synchronize()
    h = torch.ones(3)
    assert all_reduce_(h) is h and h.device.type == "cpu" and torch.equal(h, torch.ones(3))
    assert broadcast_bytes(b"artifact bytes") == b"artifact bytes"


@needs_cuda
def test_gptq_export_on_the_gpu_under_nccl(nccl_group, tmp_path, mini_data, sp1024_model):
    from lila_golf.core.artifact import load_artifact
    from lila_golf.core.config import Hyperparameters, dist_env
    from lila_golf.core.train import RunLog, build_model, calibrate_and_quantize, float_cpu_state, write_artifact
    hp = Hyperparameters.from_env({"PRESET": "test", "DATA_PATH": str(mini_data), "TOKENIZER_PATH": str(sp1024_model),
                                   "MODEL_DIM": "256", "NUM_LAYERS": "2", "QUANT_SCHEME": "int6_gptq", "CODEC": "brotli"})
    device = torch.device("cuda", 0)
    model = build_model(hp, device)
    log = RunLog(str(tmp_path / "log.txt"), True)
    state = float_cpu_state(model)
    entries, gptq_ms = calibrate_and_quantize(model, state, hp, device, log)
    write_artifact(str(tmp_path / "a.lgz"), entries, state, hp, dist_env({}), "0" * 64, log)
    state, _ = load_artifact(str(tmp_path / "a.lgz"))
    assert gptq_ms > 0 and any(e["scheme"] == "int6_gptq" for e in entries.values())
    assert set(state) == set(model.state_dict())


@needs_cuda
def test_compile_and_bf16_on_the_gpu():
    # autocast around each forward only (train.py's way); the earlier version of this test wrapped the
    # whole loop, so eager bf16 reused stale cached weight casts (seen on an H200: 9.017 vs 9.161)
    from test_compile import compiled_and_eager_losses, eager_losses
    got, want = compiled_and_eager_losses("cuda", lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    fp32 = eager_losses("cuda")
    assert max(abs(a - b) for a, b in zip(got, want)) < 0.05, (got, want)
    assert max(abs(a - b) for a, b in zip(want, fp32)) < 0.05, (want, fp32)
