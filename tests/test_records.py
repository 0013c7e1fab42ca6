"""Records: a record built from real test-preset runs verifies; tampering is caught; size, compare,
the official challenge format and the Welch test."""
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from scipy import stats

from lila_golf.tools.bundle import build_bundle
from lila_golf.core.config import Hyperparameters
from lila_golf.tools.records import (ARTIFACT_LIMIT_BYTES, RecordError, create_record, main, measure_size,
                               parse_run_log, welch_improvement_test)

SEEDS = (1, 2, 3)
# the test preset, cut to 6 steps on 1024 val targets: ~20 s for three seeds in parallel on 2 cores
RUN_ENV = {"PRESET": "test", "ITERATIONS": "6", "VAL_MAX_TOKENS": "1024", "OMP_NUM_THREADS": "1"}
ROUNDTRIP = re.compile(r"^final_submitted val_loss:(\S+) val_bpb:(\S+)", re.M)  # the submitted score


@pytest.fixture(scope="session")
def seed_runs(tmp_path_factory, mini_data, sp1024_model) -> list[Path]:
    """Three finished run folders (seeds 1, 2, 3), each with the exact train_gpt.py that ran."""
    root = tmp_path_factory.mktemp("runs")
    code = build_bundle()
    procs = []
    for seed in SEEDS:
        run_dir = root / f"seed{seed}"
        run_dir.mkdir()
        (run_dir / "train_gpt.py").write_text(code, encoding="utf-8")
        env = {**os.environ, **RUN_ENV, "SEED": str(seed), "DATA_PATH": str(mini_data),
               "TOKENIZER_PATH": str(sp1024_model), "OUT_DIR": str(root), "RUN_ID": run_dir.name}
        procs.append(subprocess.Popen([sys.executable, "train_gpt.py"], cwd=run_dir, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return [root / f"seed{s}" for s in SEEDS]


@pytest.fixture(scope="session")
def pristine_record(seed_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records")
    return create_record(seed_runs, name="Test stack", track="track_cpu_10min", author="Test Author",
                         github_id="tester", blurb="three test-preset seeds", out=out, date="2026-01-02")


@pytest.fixture
def record(pristine_record, tmp_path) -> Path:
    """A private copy of the record, free to tamper with."""
    return Path(shutil.copytree(pristine_record, tmp_path / "track_cpu_10min" / pristine_record.name))


def verify(capsys, *args) -> tuple[int, str]:
    rc = main(["verify", *map(str, args)])
    return rc, capsys.readouterr().out


# ----------------------------------------------------------------------------- record + verify

def test_record_from_real_runs_verifies(pristine_record, record, seed_runs, capsys):
    assert pristine_record.parent.name == "track_cpu_10min" and pristine_record.name == "2026-01-02_Test_stack"
    rc, out = verify(capsys, record)
    assert rc == 0, out
    for name in ("files", "fields", "code_hash", "numbers", "artifacts", "bytes_total", "times"):
        assert f"PASS {name}:" in out
    assert "NOTE val_set" in out  # test-preset runs score a val subset: said, not hidden
    # reference: the numbers straight from the run logs, independently of the record code
    scores = [ROUNDTRIP.search((d / "train.log").read_text()).groups() for d in seed_runs]
    sub = json.loads((record / "submission.json").read_text())
    mean_loss = sum(Decimal(l) for l, _ in scores) / 3
    mean_bpb = sum(Decimal(b) for _, b in scores) / 3
    assert f"{sub['val_loss']:.8f}" == f"{mean_loss:.8f}" and f"{sub['val_bpb']:.8f}" == f"{mean_bpb:.8f}"
    assert [f"{sub['seed_results'][str(s)]['val_bpb']:.8f}" for s in SEEDS] == [b for _, b in scores]
    assert sub["seeds"] == list(SEEDS) and sub["val_bpb_std"] > 0
    code_bytes = (seed_runs[0] / "train_gpt.py").stat().st_size
    model_bytes = max((d / "final_model.int8.zlib.lgz").stat().st_size for d in seed_runs)
    assert (sub["bytes_code"], sub["bytes_total"]) == (code_bytes, code_bytes + model_bytes)
    assert (record / "train_gpt.py").read_bytes() == (seed_runs[0] / "train_gpt.py").read_bytes()
    assert (record / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch==" in (record / "requirements.txt").read_text()
    assert not sub["compliance"]["full_val_set"]


def test_readme_commands_rebuild_each_config(record):
    """The README's reproduce commands give back every seed's logged config (output paths aside)."""
    readme = (record / "README.md").read_text()
    commands = [l for l in readme.splitlines() if l.endswith(" python train_gpt.py")]
    assert len(commands) == len(SEEDS)
    for seed, command in zip(SEEDS, commands):
        env = dict(w.split("=", 1) for w in shlex.split(command)[:-2])
        rebuilt = Hyperparameters.from_env(env).as_dict()
        logged = parse_run_log(record / f"train_seed{seed}.log").config
        assert {k: str(v) for k, v in rebuilt.items() if k not in ("run_id", "out_dir")} == \
               {k: v for k, v in logged.items() if k not in ("run_id", "out_dir")}
        assert f"| {seed} |" in readme


def _bump_val_bpb(rec: Path):
    sub = json.loads((rec / "submission.json").read_text())
    sub["val_bpb"] = round(sub["val_bpb"] + 1e-8, 8)
    (rec / "submission.json").write_text(json.dumps(sub, indent=2))


def _edit_code(rec: Path):
    with open(rec / "train_gpt.py", "a") as f:
        f.write("# tuned after the run\n")


def _oversize_model(rec: Path):
    code = (rec / "train_gpt.py").stat().st_size
    with open(rec / "final_model_seed2.int8.zlib.lgz", "r+b") as f:  # sparse: no real bytes written
        f.truncate(ARTIFACT_LIMIT_BYTES - code + 1)


def _drop_log(rec: Path):
    (rec / "train_seed3.log").unlink()


@pytest.mark.parametrize("tamper, failing, message", [
    (_bump_val_bpb, "numbers", "val_bpb: submission.json"),
    (_edit_code, "code_hash", "train_seed1.log says"),
    (_oversize_model, "bytes_total", "over the limit of 16,000,000 by 1 bytes"),
    (_drop_log, "files", "missing train_seed3.log"),
])
def test_tampering_fails_verify(record, capsys, tamper, failing, message):
    tamper(record)
    rc, out = verify(capsys, record)
    assert rc == 1
    line = next(l for l in out.splitlines() if l.startswith(f"FAIL {failing}:"))
    assert message in line, out
    assert re.search(rf"^verify: FAIL \(.*\b{failing}\b", out, re.M)


def test_record_refuses_code_that_did_not_run(seed_runs, tmp_path, capsys):
    edited = tmp_path / "train_gpt.py"
    edited.write_text((seed_runs[0] / "train_gpt.py").read_text() + "# edited\n")
    with pytest.raises(RecordError, match="not the code that ran"):
        create_record(seed_runs[:1], name="x", track="track_cpu_10min", out=tmp_path, code=edited)
    rc = main(["record", str(seed_runs[0]), "--name", "x", "--track", "track_cpu_10min",
               "--out", str(tmp_path / "records"), "--code", str(edited)])
    assert rc == 1 and "not the code that ran" in capsys.readouterr().err
    assert not (tmp_path / "records" / "track_cpu_10min").exists() or \
        not any((tmp_path / "records" / "track_cpu_10min").iterdir())


def test_train_time_limit_allows_only_the_step_that_began_in_time():
    """Both trainers check the clock between steps: the last step may end past 600 s, if it began
    before (the official baseline logs 600,038 ms)."""
    from lila_golf.tools.records import SeedRun, train_time_within
    run = lambda ms, steps: SeedRun(Path("x.log"), "lila", train_time_ms=ms, steps=steps)
    assert train_time_within(run(600_000, 500), 600)
    assert train_time_within(run(600_900, 500), 600)  # mean step 1,201.8 ms: began at ~599.7 s
    assert not train_time_within(run(602_000, 500), 600)  # began at ~600.8 s
    assert not train_time_within(run(None, 500), 600) and train_time_within(run(10**9, 1), None)


def test_record_refuses_code_differing_between_seeds(seed_runs, tmp_path):
    """Two seeds whose logs each match their own code, but not each other's."""
    other = Path(shutil.copytree(seed_runs[1], tmp_path / "other"))
    code = (other / "train_gpt.py").read_bytes() + b"# other code\n"
    (other / "train_gpt.py").write_bytes(code)
    import hashlib
    log = (other / "train.log").read_text()
    log = re.sub(r"^code_sha256:\S+ code_path:\S+ bytes_code:\d+",
                 f"code_sha256:{hashlib.sha256(code).hexdigest()} code_path:train_gpt.py bytes_code:{len(code)}", log)
    (other / "train.log").write_text(log)
    with pytest.raises(RecordError, match="code differs between seeds"):
        create_record([seed_runs[0], other], name="x", track="track_cpu_10min", out=tmp_path)
    with pytest.raises(RecordError, match="duplicate seeds"):
        create_record([seed_runs[0], seed_runs[0]], name="y", track="track_cpu_10min", out=tmp_path)


# ----------------------------------------------------------------------------- size

def test_size_limit_exit_codes(tmp_path, capsys):
    code = tmp_path / "train_gpt.py"
    code.write_bytes(b"print('hi')\n" * 10)
    model = tmp_path / "final_model.int8.zlib.lgz"
    for model_bytes, expected_rc in ((ARTIFACT_LIMIT_BYTES - 120, 0), (ARTIFACT_LIMIT_BYTES - 119, 1)):
        with open(model, "wb") as f:
            f.truncate(model_bytes)  # sparse file
        rc = main(["size", str(code), str(model)])
        out = capsys.readouterr().out
        total = 120 + model_bytes
        assert rc == expected_rc
        assert f"bytes_code:120 bytes_model:{model_bytes} bytes_total:{total} limit:16000000" in out
    assert "over_limit_by:1" in out
    assert main(["size", str(tmp_path / "nothing")]) == 2


def test_size_of_run_folder_measures_files(seed_runs, capsys):
    run = seed_runs[0]
    assert main(["size", str(run)]) == 0
    out = capsys.readouterr().out
    code, model = (run / "train_gpt.py").stat().st_size, (run / "final_model.int8.zlib.lgz").stat().st_size
    assert f"bytes_code:{code} bytes_model:{model} bytes_total:{code + model} limit:16000000" in out


# ----------------------------------------------------------------------------- official format

# Facts from openai/parameter-golf records/track_10min_16mb (e.g. 2026-03-17_NaiveBaseline,
# 2026-03-19_10Layer_MuonWD_NTKEval_OvertoneInit): README.md, submission.json (author, github_id,
# name, blurb, date, val_loss, val_bpb, bytes_total, bytes_code), train_gpt.py, train_seed<S>.log;
# logs print `seed:S`, `step:N/M train_loss:.. train_time:Nms step_avg:..`, `stopping_early:
# wallclock_cap train_time:Nms step:N/M` (a few ms past 600 s), `Serialized model int8+zlib: N bytes`,
# `Code size: N bytes`, `Total submission size int8+zlib: N bytes`, `final_int8_zlib_roundtrip
# val_loss:.. val_bpb:.. eval_time:Nms` (4 decimals) and `final_int8_zlib_roundtrip_exact` (8 decimals).
OFFICIAL_LOG = """\
logs/run_seed{seed}.txt
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=/data/tokenizers/fineweb_1024_bpe.model
train_loader:dataset:fineweb10B_sp1024 train_shards:80
model_params:17059912
world_size:8 grad_accum_steps:1
train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000
seed:{seed}
warmup_step:1/20
step:1/20000 train_loss:6.9323 train_time:62ms step_avg:61.92ms
step:200/20000 train_loss:2.9296 train_time:8677ms step_avg:43.38ms
step:200/20000 val_loss:2.8397 val_bpb:1.6774 train_time:8699ms step_avg:43.49ms
step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
peak memory allocated: 10184 MiB reserved: 10200 MiB
Serialized model: 67224983 bytes
Code size: {code} bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: {model} bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: {total} bytes
final_int8_zlib_roundtrip val_loss:{loss4} val_bpb:{bpb4} eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:{loss} val_bpb:{bpb}
"""


def make_official_record(folder: Path, losses: list[str], bpbs: list[str], models: list[int]) -> Path:
    folder.mkdir(parents=True)
    code = b"# official-style train_gpt.py\n" * 1000
    (folder / "train_gpt.py").write_bytes(code)
    (folder / "README.md").write_text("# Naive baseline\n")
    seeds = [1337, 42, 7][: len(losses)]
    for seed, loss, bpb, model in zip(seeds, losses, bpbs, models):
        (folder / f"train_seed{seed}.log").write_text(OFFICIAL_LOG.format(
            seed=seed, code=len(code), model=model, total=len(code) + model, loss=loss, bpb=bpb,
            loss4=f"{float(loss):.4f}", bpb4=f"{float(bpb):.4f}"))
    mean = lambda xs: f"{sum(Decimal(x) for x in xs) / len(xs):.8f}"
    sub = ('{\n  "author": "Baseline",\n  "github_id": "openai",\n  "name": "Naive Baseline",\n'
           '  "blurb": "SP-1024 9x512 KV4",\n  "date": "2026-03-18T00:05:35Z",\n'
           f'  "val_loss": {mean(losses)},\n  "val_bpb": {mean(bpbs)},\n'
           f'  "bytes_total": {len(code) + max(models)},\n  "bytes_code": {len(code)}\n}}\n')
    (folder / "submission.json").write_text(sub)
    return folder


OFFICIAL_LOSSES = ["2.07269931", "2.07012345", "2.07400002"]
OFFICIAL_BPBS = ["1.22436570", "1.22284501", "1.22513642"]


@pytest.fixture
def official(tmp_path) -> Path:
    return make_official_record(tmp_path / "track_10min_16mb" / "2026-03-17_NaiveBaseline",
                                OFFICIAL_LOSSES, OFFICIAL_BPBS, [15815847, 15815001, 15816000])


def test_official_format_verifies_with_read_and_na_labels(official, capsys):
    rc, out = verify(capsys, official)
    assert rc == 0, out
    assert "N/A code_hash: n/a" in out
    code = (official / "train_gpt.py").stat().st_size
    assert f"bytes_code:{code} (measured) bytes_model:15816000 (read) bytes_total:{code + 15816000}" in out
    assert re.search(r"PASS times: track_10min_16mb: max train 600\.0 s", out)  # 600,038 ms: last step began in time
    assert main(["size", str(official)]) == 0
    assert "model:read_from_train_seed7.log" in capsys.readouterr().out


def test_official_format_wrong_number_fails(official, capsys):
    text = (official / "submission.json").read_text()
    (official / "submission.json").write_text(text.replace('"val_bpb": 1.22411571', '"val_bpb": 1.22411572'))
    rc, out = verify(capsys, official)
    assert rc == 1 and "FAIL numbers: val_bpb: submission.json 1.22411572 != logs 1.22411571" in out


# ----------------------------------------------------------------------------- compare

def test_compare_prints_a_row_per_input(seed_runs, pristine_record, official, capsys):
    paths = [*seed_runs[:2], pristine_record, official]
    assert main(["compare", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "seeds", "val_bpb"]
    rows = lines[1:1 + len(paths)]
    assert [r.split()[0] for r in rows] == [p.name for p in paths]
    assert [r.split()[1] for r in rows] == ["1", "1", "3", "3"]
    sub = json.loads((pristine_record / "submission.json").read_text())
    assert rows[2].split()[2] == f"{sub['val_bpb']:.8f}"
    assert rows[3].split()[5].endswith("*")  # official: bytes read from the log, marked


# ----------------------------------------------------------------------------- Welch

def test_welch_matches_hand_computation():
    prev = [2.0727, 2.0701, 2.0740]
    new = [2.0601, 2.0615, 2.0589, 2.0608]
    na, nb = len(prev), len(new)
    ma, mb = sum(prev) / na, sum(new) / nb
    va = sum((x - ma) ** 2 for x in prev) / (na - 1)
    vb = sum((x - mb) ** 2 for x in new) / (nb - 1)
    se = math.sqrt(va / na + vb / nb)
    t = (ma - mb - 0.005) / se
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    res = welch_improvement_test(new, prev)
    assert res.improvement == pytest.approx(ma - mb, abs=1e-12)
    assert res.t == pytest.approx(t, rel=1e-9) and res.df == pytest.approx(df, rel=1e-9)
    assert res.p_value == pytest.approx(stats.t.sf(t, df), rel=1e-9)
    assert res.p_value < 0.01
    # an improvement of exactly the bar is not significant: t = 0, p = 0.5
    assert welch_improvement_test([x - 0.005 for x in prev], prev).p_value == pytest.approx(0.5)
    with pytest.raises(RecordError, match="at least 2 seeds"):
        welch_improvement_test([2.0], prev)


def test_verify_against_previous_record(official, tmp_path, capsys):
    better = make_official_record(tmp_path / "track_10min_16mb" / "better",
                                  ["2.06010000", "2.06120000", "2.05950000"],
                                  ["1.22010000", "1.22080000", "1.21970000"], [15815000] * 3)
    rc, out = verify(capsys, better, "--against", official)
    assert rc == 0 and re.search(r"^PASS welch: .* p=\S+ \(< 0.01\)", out, re.M), out
    close = make_official_record(tmp_path / "track_10min_16mb" / "close",
                                 ["2.06900000", "2.06700000", "2.06950000"],
                                 ["1.22300000", "1.22200000", "1.22350000"], [15815000] * 3)
    rc, out = verify(capsys, close, "--against", official)
    assert rc == 1 and re.search(r"^FAIL welch: .*\(>= 0.01\)", out, re.M) and "verify: FAIL (welch)" in out


# ----------------------------------------------------------------------------- hostile folders (issue 15)

def _set_seed_result(rec: Path, seed: str, **changes):
    sub = json.loads((rec / "submission.json").read_text())
    sub["seed_results"][seed].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del sub["seed_results"][seed][key]
    (rec / "submission.json").write_text(json.dumps(sub, indent=2))


def _outside_copy(rec: Path) -> Path:
    """A copy of seed 1's log just outside the record folder: every check would pass on it."""
    return Path(shutil.copy(rec / "train_seed1.log", rec.parent / "outside.log"))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "seed_key"])
def test_paths_leaving_the_folder_fail_before_anything_is_read(record, capsys, how):
    outside = _outside_copy(record)
    if how == "dotdot":
        _set_seed_result(record, "1", log="../outside.log")
    elif how == "absolute":
        _set_seed_result(record, "1", log=str(outside.resolve()))
    elif how == "symlink":
        (record / "train_seed1.log").unlink()
        (record / "train_seed1.log").symlink_to(outside.resolve())
    else:  # a seed named so that its default log name climbs out
        sub = json.loads((record / "submission.json").read_text())
        sub["seed_results"]["../../x"] = {k: v for k, v in sub["seed_results"].pop("1").items() if k != "log"}
        (record / "submission.json").write_text(json.dumps(sub))
    rc, out = verify(capsys, record)
    assert rc == 1 and out.splitlines()[0].startswith("FAIL paths:") and "verify: FAIL (paths)" in out, out
    assert len(out.splitlines()) == 2  # nothing else was checked, so nothing outside was read


def test_record_date_and_name_cannot_leave_the_records_folder(seed_runs, tmp_path):
    out = tmp_path / "deep" / "records"
    for date, name, words in [("../../escape", "x", "not a date"), ("2026-02-30", "x", "not a date"),
                              ("2026-01-02", "../..", "no letter or digit")]:
        with pytest.raises(RecordError, match=words):
            create_record(seed_runs[:1], name=name, track="track_cpu_10min", out=out, date=date)
    assert not tmp_path.joinpath("escape_x").exists() and not any(tmp_path.rglob("*escape*"))


def test_log_values_that_would_become_paths_are_refused(seed_runs, tmp_path):
    run = Path(shutil.copytree(seed_runs[0], tmp_path / "run"))
    log = (run / "train.log").read_text()
    (run / "train.log").write_text(re.sub(r"^(config .*?)seed:1 ", r"\1seed:../../x ", log, flags=re.M))
    with pytest.raises(RecordError, match="not a plain word"):
        create_record([run], name="x", track="track_cpu_10min", out=tmp_path / "records")


# ----------------------------------------------------------------------------- verify --reeval

def _forge_lower_score(rec: Path, seed: int = 1, by: Decimal = Decimal("0.01")):
    """Lower one seed's logged roundtrip score and rewrite submission.json to match: the numbers,
    hashes and sizes all agree, only re-scoring the artifact can tell."""
    from lila_golf.tools.records.folder import mean8, std8
    path = rec / f"train_seed{seed}.log"
    m = ROUNDTRIP.search(path.read_text())
    loss, bpb = (f"{Decimal(v) - by:.8f}" for v in m.groups())
    path.write_text(path.read_text().replace(m.group(0), f"final_submitted val_loss:{loss} val_bpb:{bpb}"))
    runs = [parse_run_log(rec / f"train_seed{s}.log") for s in SEEDS]
    sub = json.loads((rec / "submission.json").read_text())
    sub["seed_results"][str(seed)].update(val_loss=float(loss), val_bpb=float(bpb))
    for key in ("val_loss", "val_bpb"):
        sub[key] = float(mean8([getattr(r, key) for r in runs]))
        sub[f"{key}_std"] = float(std8([getattr(r, key) for r in runs]))
    (rec / "submission.json").write_text(json.dumps(sub, indent=2))


def test_reeval_reproduces_every_seed_and_catches_a_forged_log(record, capsys):
    rc, out = verify(capsys, record, "--reeval")
    assert rc == 0, out
    for seed in SEEDS:
        assert re.search(rf"^PASS reeval\.{seed}: seed {seed} \(1024 targets, data:fineweb\): plain val_bpb:\S+: "
                         r"equal to the log$", out, re.M), out
    _forge_lower_score(record)
    rc, out = verify(capsys, record)
    assert rc == 0, out  # without re-scoring, a consistent forgery passes every check
    rc, out = verify(capsys, record, "--reeval")
    assert rc == 1 and re.search(r"^FAIL reeval\.1: .*plain val_loss \S+ != logged \S+", out, re.M), out
    assert "PASS reeval.2" in out and "verify: FAIL (reeval.1)" in out


# ----------------------------------------------------------------------------- labels and coverage

def test_record_says_what_was_scored_and_refuses_other_data_on_fineweb_tracks(seed_runs, pristine_record, tmp_path):
    sub = json.loads((pristine_record / "submission.json").read_text())
    assert sub["compliance"]["full_val_set"] is False
    assert (sub["compliance"]["val_targets"], sub["compliance"]["val_targets_official"]) == (1024, 62_021_845)
    assert "the first 1,024 of 62,021,845 targets of the official FineWeb validation set" in \
        (pristine_record / "README.md").read_text()
    for d in seed_runs:
        assert re.search(r"^final_int8_zlib_roundtrip val_loss:.* data:fineweb$", (d / "train.log").read_text(), re.M)
    pydoc = []
    for d in seed_runs:
        run = Path(shutil.copytree(d, tmp_path / d.name))
        (run / "train.log").write_text((run / "train.log").read_text().replace(" data:fineweb", " data:embedded_pydoc"))
        pydoc.append(run)
    with pytest.raises(RecordError, match="not FineWeb: track_cpu_10min takes FineWeb scores only"):
        create_record(pydoc, name="x", track="track_cpu_10min", out=tmp_path / "records")
    rec = create_record(pydoc, name="x", track="track_non_record_16mb", out=tmp_path / "records")
    assert "1,024 targets of embedded_pydoc data (NOT FineWeb" in (rec / "README.md").read_text()


def test_full_val_set_only_for_every_official_target():
    from lila_golf.tools.records import SeedRun
    from lila_golf.tools.records.folder import official_val_targets, val_coverage
    run = lambda n, data="fineweb", vocab="1024": SeedRun(Path("x.log"), "lila", targets=n, data_label=data,
                                                           config={"vocab_size": vocab})
    assert official_val_targets(run(62_021_845)) == 62_021_845
    assert val_coverage(run(62_021_845)) == "all 62,021,845 targets of the official FineWeb validation set"
    assert "first 131,071 of 62,021,845" in val_coverage(run(131_071))
    assert official_val_targets(run(62_021_845, vocab="8192")) is None  # its official count is not known here
    assert official_val_targets(run(62_021_845, data="other")) is None and "NOT FineWeb" in val_coverage(run(5, "other"))


# ----------------------------------------------------------------------------- submitted line, clock rule

SUBMITTED_LOG = """\
code_sha256:{sha} code_path:train_gpt.py bytes_code:100
config preset:test seed:5 vocab_size:1024 train_seq_len:64 eval_stride:32 quant_scheme:int6_gptq codec:brotli
train_steps:900 train_time_ms:590000 last_step_start_ms:589300
time_budget train_time_ms:590000 gptq_time_ms:{gptq} total_ms:{total} cap_ms:600000
time_valid:{valid}
final_int6_gptq_brotli_roundtrip val_loss:2.10000000 val_bpb:1.25000000 tokens:62021845 bytes:151000000 eval_time:20000ms data:fineweb
eval_phase name:plain val_loss:2.10000000 val_bpb:1.25000000 targets:62021845 bytes:151000000 time_ms:20000
eval_phase name:sliding val_loss:2.05000000 val_bpb:1.22000000 targets:62021845 bytes:151000000 time_ms:{sliding_ms}
final_submitted val_loss:2.05000000 val_bpb:1.22000000 targets:62021845 bytes:151000000 eval_time_ms:{eval_ms} phases:plain,sliding data:fineweb
bytes_code:100 bytes_model:15000000 bytes_total:15000100 limit:16000000
artifact_valid:true
"""


def _submitted_log(tmp_path, gptq=8000, sliding_ms=300000, eval_ms=321000) -> Path:
    total = 590000 + gptq
    path = tmp_path / f"train_{gptq}_{sliding_ms}.log"
    path.write_text(SUBMITTED_LOG.format(sha="0" * 64, gptq=gptq, total=total, sliding_ms=sliding_ms, eval_ms=eval_ms,
                                         valid="true" if total <= 600000 else f"false over_cap_ms:{total - 600000}"))
    return path


def test_submitted_line_is_the_score_and_its_eval_time_covers_every_phase(tmp_path):
    from lila_golf.tools.records.folder import TRACKS, limit_problems
    run = parse_run_log(_submitted_log(tmp_path))
    assert (run.score_key, run.score_source, run.val_loss, run.val_bpb) == \
        ("final_submitted", "final_submitted", "2.05000000", "1.22000000")
    assert (run.eval_time_ms, run.targets, run.data_label, run.phases) == (321000.0, 62021845, "fineweb", ["plain", "sliding"])
    assert [p["name"] for p in run.eval_phases] == ["plain", "sliding"] and run.roundtrip["val_bpb"] == "1.25000000"
    rules = TRACKS["track_10min_16mb"]
    assert limit_problems(run, rules) == []
    slow = parse_run_log(_submitted_log(tmp_path, sliding_ms=590000, eval_ms=610000))
    assert limit_problems(slow, rules) == ["train_8000_590000.log: eval 610.0 s (all phases) > 600 s"]
    hidden = parse_run_log(_submitted_log(tmp_path, sliding_ms=400000, eval_ms=300000))  # phases outrun the total
    assert "more than the submitted eval_time_ms" in limit_problems(hidden, rules)[0]
    older = parse_run_log(record_logs_first(tmp_path))
    assert older.score_source == "roundtrip" and older.val_bpb == "1.25000000" and older.phases == ["plain"]


def record_logs_first(tmp_path) -> Path:
    """The same log without its final_submitted, eval_phase and time lines: how older logs look."""
    path = tmp_path / "older.log"
    text = _submitted_log(tmp_path).read_text()
    path.write_text("".join(l for l in text.splitlines(True)
                            if not l.startswith(("final_submitted", "eval_phase", "time_budget", "time_valid"))))
    return path


def test_clock_rule_for_logs_with_gptq_time_has_no_allowance(tmp_path):
    from lila_golf.tools.records.folder import TRACKS, clock_rule, limit_problems, train_time_within
    ok, over = parse_run_log(_submitted_log(tmp_path, gptq=10000)), parse_run_log(_submitted_log(tmp_path, gptq=10001))
    assert train_time_within(ok, 600) and ok.time_valid is True
    assert not train_time_within(over, 600) and over.time_valid is False  # its last step began at 589.3 s
    assert "gptq_time_ms" in clock_rule(over) and "last step" in clock_rule(parse_run_log(record_logs_first(tmp_path)))
    assert limit_problems(over, TRACKS["track_10min_16mb"]) == [
        "train_10001_300000.log: train 590.0 s + gptq 10.0 s = 600.0 s > 600 s (time_valid:false)"]


def test_record_and_verify_take_the_submitted_line(seed_runs, tmp_path, capsys):
    """Runs whose logs end with a final_submitted line (phases plain): record copies its figures,
    verify says which line scored each log and --reeval re-scores it; an unknown phase fails reeval."""
    runs = [Path(shutil.copytree(d, tmp_path / d.name)) for d in seed_runs]  # train_gpt.py logs it
    eval_ms = float(re.search(r"^final_submitted .* eval_time_ms:(\d+)", (runs[0] / "train.log").read_text(), re.M).group(1))
    rec = create_record(runs, name="submitted", track="track_cpu_10min", out=tmp_path / "records", date="2026-01-03")
    sub = json.loads((rec / "submission.json").read_text())
    assert sub["score_key"] == "final_submitted" and sub["seed_results"]["1"]["eval_time_ms"] == eval_ms
    assert "the `final_submitted` line of each log (evaluation phases plain" in (rec / "README.md").read_text()
    rc, out = verify(capsys, rec, "--reeval")
    assert rc == 0 and "PASS score_line: every log scored by its final_submitted line (phases plain)" in out, out
    assert out.count("equal to the log") == 3
    assert main(["compare", str(rec)]) == 0 and " submitted " in capsys.readouterr().out
    log = rec / "train_seed1.log"
    log.write_text(log.read_text().replace("phases:plain ", "phases:plain,ttt "))
    rc, out = verify(capsys, rec, "--reeval")
    assert rc == 1 and "phase 'ttt' was logged but the run's config runs no such phase" in out


def test_size_refuses_a_model_symlinked_from_outside(seed_runs, tmp_path, capsys):
    run = Path(shutil.copytree(seed_runs[0], tmp_path / "run"))
    small = tmp_path / "small.lgz"
    small.write_bytes(b"x")
    (run / "final_model.int8.zlib.lgz").unlink()
    (run / "final_model.int8.zlib.lgz").symlink_to(small)
    assert main(["size", str(run)]) == 2 and "outside" in capsys.readouterr().err


def test_verify_names_the_clock_rule_it_applied(record, capsys):
    for seed in SEEDS:  # as an older log: no GPTQ clock lines
        log = record / f"train_seed{seed}.log"
        log.write_text("".join(l for l in log.read_text().splitlines(True) if not l.startswith(("time_budget", "time_valid"))))
    rc, out = verify(capsys, record)
    assert "clock rule: last step began before the cap (official-format or older log)" in out
    for seed in SEEDS:
        log = record / f"train_seed{seed}.log"
        ms = parse_run_log(log).train_time_ms
        log.write_text(log.read_text() + f"time_budget train_time_ms:{ms:.0f} gptq_time_ms:1500 total_ms:{ms + 1500:.0f} "
                                         f"cap_ms:600000\ntime_valid:true\n")
    rc, out = verify(capsys, record)
    assert rc == 0 and "+ gptq 1.5 s" in out and "clock rule: train_time_ms + gptq_time_ms <= cap, no allowance" in out, out
    log = record / "train_seed2.log"
    log.write_text(log.read_text().replace("gptq_time_ms:1500", "gptq_time_ms:600000"))
    rc, out = verify(capsys, record)
    assert rc == 1 and re.search(r"^FAIL times: .*train_seed2\.log: train \S+ s \+ gptq 600\.0 s", out, re.M), out


def test_malformed_or_huge_logs_are_clear_failures(record, capsys):
    log = record / "train_seed1.log"
    log.write_text(log.read_text() + "final_submitted val_loss:1.0 val_bpb:0.5 eval_time_ms:soon phases:plain\n")
    rc, out = verify(capsys, record)
    assert rc == 1 and "malformed score line" in out and "Traceback" not in out
    with open(log, "r+b") as f:
        f.truncate(65 << 20)  # sparse: 65 MiB of nothing, refused by size before it is read
    rc, out = verify(capsys, record)
    assert rc == 1 and "too large for a training log" in out


def test_compare_refuses_a_log_symlinked_from_outside(seed_runs, tmp_path, capsys):
    run = Path(shutil.copytree(seed_runs[0], tmp_path / "run"))
    outside = Path(shutil.copy(run / "train.log", tmp_path / "elsewhere.log"))
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(outside)
    assert main(["compare", str(run)]) == 2 and "outside" in capsys.readouterr().err
