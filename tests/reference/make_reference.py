"""Write the behaviour reference of a fixed-seed `test` preset run (per-step losses, the final
losses and the artifact's sha256), used by tests/test_reference.py to prove refactors change nothing.

    python tests/reference/make_reference.py [--script train_gpt.py]

The committed reference was made from main before the house refactor (issue 12), with the
train_gpt.py of that commit, one torch thread, on this project's 2-core CPU machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REFERENCE = Path(__file__).resolve().parent / "test_preset_reference.json"
# everything fixed: seed, one thread, the test preset plus EMA and Muon weight decay so that those
# code paths are in the reference too
BASE_ENV = {"PRESET": "test", "SEED": "1337", "OMP_NUM_THREADS": "1", "RUN_ID": "reference"}
REFERENCE_RUNS = {
    "test_ema_wd": {"EMA_DECAY": "0.9", "MUON_WEIGHT_DECAY": "0.01"},
    # the record preset's switches and export on the test shape
    "test_record_switches": {"BIGRAM_HASH_BUCKETS": "64", "SMEAR_GATE": "1", "XSA_LAST_N": "1",
                             "VALUE_RESIDUAL": "1", "LN_SCALE": "1", "ROPE_DIMS": "8",
                             "ACTIVATION": "leaky_relu2", "QUANT_SCHEME": "int6_gptq", "CODEC": "brotli"},
}
STEP_LOSS = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+)", re.M)


def run_reference(script: Path, workdir: Path, extra_env: dict) -> dict:
    env = {**os.environ, **BASE_ENV, **extra_env, "OUT_DIR": str(workdir / "runs"),
           "DATA_PATH": str(SHARED_DATA / "fineweb10B_sp1024_mini"),
           "TOKENIZER_PATH": str(SHARED_DATA / "tokenizers" / "fineweb_1024_bpe.model")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    run_dir = workdir / "runs" / "reference"
    log = (run_dir / "train.log").read_text()
    artifact = next(run_dir.glob("final_model.*"))
    return {
        "env": {**BASE_ENV, **extra_env},
        "step_losses": {s: v for s, v in STEP_LOSS.findall(log)},
        "final_float": re.search(r"final_float (val_loss:\S+ val_bpb:\S+)", log).group(1),
        "roundtrip": re.search(r"final_\w+_roundtrip (val_loss:\S+ val_bpb:\S+)", log).group(1),
        "artifact_name": artifact.name,
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
    }


def main() -> int:
    import tempfile
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--script", default=str(REPO_ROOT / "train_gpt.py"))
    args = p.parse_args()
    refs = {}
    for name, extra_env in REFERENCE_RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            refs[name] = run_reference(Path(args.script).resolve(), Path(tmp), extra_env)
        print(f"{name}: {len(refs[name]['step_losses'])} steps, artifact {refs[name]['artifact_sha256'][:16]}")
    REFERENCE.write_text(json.dumps(refs, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
