"""The README's main job: `python -m lila_golf demo` trains, packs and scores end to end offline."""
import os
import subprocess
import sys


def test_demo_runs_on_embedded_corpus(tmp_path):
    """No challenge data in the working directory and no DATA_PATH: the embedded pydoc corpus is
    built, trained on (shortened smoke preset) and the score is labelled as not FineWeb."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "TOKENIZER_PATH")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), ITERATIONS="3",
               VAL_MAX_TOKENS="2048", VAL_LOSS_EVERY="0", MAX_WALLCLOCK_SECONDS="0")
    proc = subprocess.run([sys.executable, "-m", "lila_golf", "demo", "--run-id", "demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NOT FineWeb" in proc.stdout and "data:embedded_pydoc" in proc.stdout
    assert "valid:true" in proc.stdout
    run_dir = tmp_path / "runs" / "demo"
    for name in ("train.log", "config.json", "train_gpt.py"):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("final_model.*"))
    log = (run_dir / "train.log").read_text()  # every score line names the data, decided from its tokens
    scores = [l for l in log.splitlines() if l.startswith(("final_float", "final_int8_zlib_roundtrip"))]
    assert len(scores) == 2 and all(l.endswith(" data:embedded_pydoc") for l in scores), scores
