"""Worker for the distributed-export test: GPTQ calibration + the solve split across ranks + the
artifact shared as bytes, under a process group that refuses tensors the way NCCL does.

Launched by tests/test_collectives.py:
    RANK=r WORLD_SIZE=n MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/_export_dist_worker.py OUT_DIR DATA TOKENIZER [fake_nccl]
Each rank writes OUT_DIR/rank{r}/final.lgz and OUT_DIR/rank{r}/log.txt (ranks share no folder, as
on nodes without a common filesystem).

"fake_nccl": a gloo group wrapped so that every collective refuses a tensor that did not come
through lila_golf.core.collectives' move onto the backend's device - the way NCCL refuses a CPU
tensor. (On CPU there is no second device to move to; the wrapper checks the route instead.)
"""
import os
import sys

import torch
import torch.distributed as dist

import lila_golf.core.collectives as collectives
from lila_golf.core.config import Hyperparameters
from lila_golf.core.train import build_model, calibrate_and_quantize, float_cpu_state, write_artifact, RunLog
from lila_golf.core.config import dist_env

PLACED = set()  # ids of tensors the collectives helper put on the backend's device


def fake_nccl() -> None:
    def placed(tensor):
        buf = tensor.clone().contiguous()  # a fresh tensor, as a device copy would be
        PLACED.add(id(buf))
        return buf

    def refusing(fn):
        def wrapper(tensor, *args, **kwargs):
            if id(tensor) not in PLACED:
                raise RuntimeError(f"fake NCCL: {fn.__name__} got a tensor on {tensor.device} that was not "
                                   f"moved to the backend's device (NCCL refuses CPU tensors)")
            return fn(tensor, *args, **kwargs)
        wrapper.__name__ = fn.__name__
        return wrapper

    collectives._on_backend = placed
    dist.all_reduce, dist.broadcast = refusing(dist.all_reduce), refusing(dist.broadcast)


def main() -> int:
    out_dir, data, tokenizer = sys.argv[1:4]
    if len(sys.argv) > 4 and sys.argv[4] == "fake_nccl":
        fake_nccl()
    denv = dist_env()
    if denv.distributed:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    hp = Hyperparameters.from_env({"PRESET": "test", "DATA_PATH": data, "TOKENIZER_PATH": tokenizer,
                                   "MODEL_DIM": "256", "NUM_LAYERS": "1", "QUANT_SCHEME": "int6_gptq",
                                   "CODEC": "brotli", "GPTQ_CALIB_BATCHES": "2"})
    model = build_model(hp, torch.device("cpu"))
    rank_dir = os.path.join(out_dir, f"rank{denv.rank}")
    os.makedirs(rank_dir, exist_ok=True)
    log = RunLog(os.path.join(rank_dir, "log.txt"), True)
    state = float_cpu_state(model)
    entries, gptq_ms = calibrate_and_quantize(model, state, hp, torch.device("cpu"), log)
    write_artifact(os.path.join(rank_dir, "final.lgz"), entries, state, hp, denv, "0" * 64, log)
    if denv.distributed:
        dist.barrier()  # no rank leaves gloo while its peer still talks (teardown abort)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
