"""`audit --static`: planted patterns are found at their lines, in plain and packed files; our own
train_gpt.py (complete, record, packed + minified) and the committed record's have none."""
import base64
import zlib
from pathlib import Path

import pytest

from lila_golf.tools.audit import main
from lila_golf.tools.audit_static import scan_source
from lila_golf.tools.bundle import build_file, pack

REPO = Path(__file__).resolve().parents[1]

PLANTED = '''\
import os
import numpy as np
import requests
from urllib.request import urlopen
import torch


def hashed_ngram_prob(ctx_hash, tgt, primes, full_table, ctx_table, mask):
    full_key = (ctx_hash ^ (tgt * primes[3])) & mask
    return min(full_table[full_key], ctx_table[ctx_hash & mask]) / max(ctx_table[ctx_hash & mask], 1)


def ttt_eval(model, val_chunks):
    nll = 0.0
    for chunk in val_chunks:
        adapt_lora(model, chunk)
        nll += cross_entropy(model(chunk[:-1]), chunk[1:])
    return nll


def count_then_score(counts, ctx, tok):
    counts[ctx, tok] += 1
    return logprob(counts, ctx, tok)


def loaders(args, rank, world, model, val_batches):
    loader = DistributedTokenLoader(os.path.join(args.data_path, "fineweb_val_*.bin"), rank, world)
    train_files = "data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin"
    everything = sorted(glob.glob("data/fineweb_*.bin"))
    hessians = collect_hessians(model, val_batches)
    weights = torch.hub.load("someone/repo", "model")
    os.system("wget http://example.com/weights.bin")
    return loader, train_files, everything, hessians, weights
'''
EXPECTED = {("network", 3), ("network", 4), ("target-in-hash-key", 9), ("score-after-update", 17),
            ("score-after-update", 23), ("val-in-training", 27), ("val-in-training", 28), ("val-in-training", 29),
            ("val-in-training", 30), ("network", 31), ("network", 32)}


def found(findings) -> set:
    return {(f.rule, f.line) for f in findings}


def test_planted_patterns_are_found_at_their_lines():
    findings = scan_source(PLANTED)
    assert found(findings) == EXPECTED, [f.text() for f in findings]


@pytest.mark.parametrize("packing", ["lzma_b85", "zlib_b64"])
def test_packed_files_are_unpacked_and_scanned(packing):
    if packing == "lzma_b85":
        packed = pack(PLANTED)
    else:
        payload = base64.b64encode(zlib.compress(PLANTED.encode())).decode()
        packed = f"import base64,zlib\nexec(zlib.decompress(base64.b64decode({payload!r})).decode())\n"
    findings = scan_source(packed)
    assert found(findings) == EXPECTED and all(f.where == "packed code from line 2" for f in findings)


def test_code_that_cannot_be_read_statically_is_a_finding():
    findings = scan_source("import sys\nsrc = open(sys.argv[1]).read()\nexec(compile(src, 'x', 'exec'))\n")
    assert found(findings) == {("opaque-code", 3)}
    bad = scan_source("import lzma, base64\nexec(lzma.decompress(base64.b85decode('not base85 at all')))\n")
    assert found(bad) == {("opaque-code", 2)}


@pytest.mark.parametrize("preset,packed,minified", [(None, False, False), ("record", False, False),
                                                    ("record", True, True), (None, True, True)])
def test_our_train_gpt_has_no_findings(preset, packed, minified):
    assert scan_source(build_file(preset, packed, minified)) == []


def test_cli_exit_codes(tmp_path, capsys):
    clean = REPO / "train_gpt.py"
    assert main(["--static", str(clean)]) == 0
    assert "findings:0" in capsys.readouterr().out
    record = next((REPO / "records").glob("track_*/*/train_gpt.py"))
    assert main(["--static", str(record)]) == 0
    capsys.readouterr()
    planted = tmp_path / "train_gpt.py"
    planted.write_text(pack(PLANTED), encoding="utf-8")
    assert main(["--static", str(planted)]) == 1
    out = capsys.readouterr().out
    assert "finding rule:target-in-hash-key line:9 (packed code from line 2)" in out and f"findings:{len(EXPECTED)}" in out
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n", encoding="utf-8")
    assert main(["--static", str(broken)]) == 2
    assert "cannot read as Python source" in capsys.readouterr().err
