"""Two "nodes" on one machine that share no filesystem: resume and the artifact reload still work.

    python benchmarks/multinode_check.py [--data DIR --tokenizer T.model]

Launches `torchrun --nnodes 2 --nproc_per_node 1` twice (node_rank 0 and 1), each node in its own
empty folder with its own OUT_DIR (gloo, CPU): a run cut at step 10 with a checkpoint (written by
rank 0 only, so node 1 has none), then RESUME=1. Rank 0 sends the checkpoint and the artifact as
bytes over the process group, so node 1 resumes and reloads exactly rank 0's artifact. Prints one
line per check; exit 1 on a failure.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_nodes(root: Path, env: dict) -> list[subprocess.CompletedProcess]:
    port, procs = free_port(), []
    for node in (0, 1):
        folder = root / f"node{node}"
        folder.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port), str(REPO / "train_gpt.py")]
        node_env = {**os.environ, **env, "OUT_DIR": str(folder / "runs"), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, cwd=folder, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED / "fineweb10B_sp1024_mini"))
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"))
    args = p.parse_args()
    base = {"PRESET": "test", "DATA_PATH": args.data, "TOKENIZER_PATH": args.tokenizer, "RUN_ID": "mn",
            "CHECKPOINT_EVERY": "5"}
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cut = launch_nodes(root, {**base, "STOP_AT_STEP": "10"})
        checks.append(("cut run exits 0 on both nodes", all(r.returncode == 0 for r in cut), cut[0].stderr[-500:] + cut[1].stderr[-500:]))
        ckpts = [(root / f"node{n}" / "runs" / "mn" / "checkpoint.lgck").exists() for n in (0, 1)]
        checks.append(("checkpoint only on node 0 (no shared filesystem)", ckpts == [True, False], str(ckpts)))
        resumed = launch_nodes(root, {**base, "RESUME": "1"})
        checks.append(("resume exits 0 on both nodes", all(r.returncode == 0 for r in resumed), resumed[1].stderr[-800:]))
        log = (root / "node0" / "runs" / "mn" / "train.log").read_text()
        checks.append(("resumed from step 10", "resumed_from_step:10" in log, ""))
        arts = [sorted((root / f"node{n}" / "runs" / "mn").glob("final_model.*")) for n in (0, 1)]
        same = all(arts) and arts[0][0].read_bytes() == arts[1][0].read_bytes()
        checks.append(("node 1 reloaded rank 0's artifact byte for byte", same, str(arts)))
        checks.append(("roundtrip score logged", "_roundtrip val_loss:" in log, ""))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
