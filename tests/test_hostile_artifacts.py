"""Hostile artifacts: a small file that expands to 10 GiB, and headers declaring more than the caps,
fail fast with an ArtifactError naming the problem. Each load runs in a child process whose address
space is capped, so a regression cannot take the shared machine's memory down with it."""
import hashlib
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lila_golf.core.artifact import ARTIFACT_MAGIC, ARTIFACT_VERSION
from lila_golf.core.codec import compress

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BOMB = FIXTURES / "zeros_10GiB.brotli"  # brotli quality 4 of 10 GiB of zero bytes (8,081 bytes)
MEMORY_CAP = 4 << 30  # bytes of address space for the child process


def hostile_artifact(path: Path, groups: list, payload: bytes, tensors: list, hlen: int | None = None) -> Path:
    """An artifact laid out exactly as save_artifact writes one, valid checksum, with this header."""
    header = {"format": "lila_golf.artifact", "version": ARTIFACT_VERSION, "model_config": {},
              "tokenizer_sha256": "0" * 64, "scheme": "fp16", "codec": "brotli", "payload_bytes": len(payload),
              "groups": groups, "tensors": tensors, "num_params": 0, "sym_h0_bits": 0, "sym_coded_bytes": 0}
    hb = json.dumps(header).encode()
    body = struct.pack("<8sHI", ARTIFACT_MAGIC, ARTIFACT_VERSION, len(hb) if hlen is None else hlen) + hb + payload
    path.write_bytes(body + hashlib.sha256(body).digest())
    return path


def float_tensor(n: int, offset: int = 0, dtype: str = "<f2", shape=None) -> dict:
    item = np.dtype(dtype).itemsize if dtype != "|O" else 8
    shape = [n] if shape is None else shape
    return {"name": "w", "shape": shape, "dtype": "torch.float16", "scheme": "fp16", "codec": "brotli",
            "arrays": [{"key": "w", "dtype": dtype, "shape": shape, "group": "float", "offset": offset,
                        "nbytes": n * item}]}


def load_in_child(*paths: Path) -> list[tuple[float, str]]:
    """(seconds, ArtifactError message) of load_artifact(path) for each path, all in one child
    process limited to MEMORY_CAP bytes (one torch import); a file that loads is a test failure."""
    code = ("import json, resource, sys, time\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_CAP}, {MEMORY_CAP}))\n"
            "from lila_golf.core.artifact import ArtifactError, load_artifact\n"
            "for path in sys.argv[1:]:\n"
            "    t0 = time.perf_counter()\n"
            "    try:\n        load_artifact(path); err = None\n"
            "    except ArtifactError as exc:\n        err = str(exc)\n"
            "    print(json.dumps([time.perf_counter() - t0, err]), flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [tuple(json.loads(line)) for line in proc.stdout.splitlines()]
    assert len(out) == len(paths) and all(err is not None for _, err in out), out
    return out


def test_the_bomb_fixture_is_what_it_says():
    import brotli
    blob = BOMB.read_bytes()
    assert len(blob) < 10_000
    dec = brotli.Decompressor()
    head = dec.process(blob, output_buffer_limit=1 << 20)
    assert head[:1 << 20] == bytes(1 << 20) and not dec.is_finished()  # zeros, and far from done


def _rans_case():
    import zlib
    # RANS v1, 15 scale bits, 1 table, 1 lane, sym_min -32, alphabet 64, one 65536 x 65536 array
    side = zlib.compress(bytes(2 ** 17 + 2 * 64))
    blob = b"RANS" + struct.pack("<BBHIiHI", 1, 15, 1, 1, -32, 64, 1) + struct.pack("<II", 1 << 16, 1 << 16) \
        + struct.pack("<I", len(side)) + side
    tensor = {"name": "w", "shape": [4], "dtype": "torch.float32", "scheme": "int8", "codec": "rans",
              "arrays": [{"key": "q", "dtype": "|i1", "shape": [4], "group": "sym8", "offset": 0, "nbytes": 4}]}
    return [{"name": "sym8", "codec": "rans", "offset": 0, "length": len(blob), "raw_bytes": 4}], blob, [tensor]


def _cases() -> dict:
    """name -> (groups, payload, tensors, header length or None, words the error must hold)."""
    blob = BOMB.read_bytes()
    group = lambda length, raw: [{"name": "float", "codec": "brotli", "offset": 0, "length": length, "raw_bytes": raw}]
    big_nbytes = {**float_tensor(4), "arrays": [{**float_tensor(4)["arrays"][0], "nbytes": 1 << 40}]}
    return {
        # declares 2 KiB decoded, holds a stream of 10 GiB of zeros
        "bomb": (group(len(blob), 2048), blob, [float_tensor(1024)], None, "expands past 2048 bytes"),
        "declared_10GiB": (group(len(blob), 10 << 30), blob, [float_tensor(1024)], None, "declares 10737418240 decoded bytes"),
        "outside_payload": (group(len(blob) + 1, 8), blob, [float_tensor(4)], None, "lies outside the payload"),
        "tensor_elements": (group(len(blob), 8), blob, [float_tensor(1 << 40, shape=[1 << 20, 1 << 20])], None, "exceeds the cap"),
        "object_dtype": (group(len(blob), 8), blob, [float_tensor(1, dtype="|O")], None, "not allowed"),
        "array_nbytes": (group(len(blob), 8), blob, [big_nbytes], None, "declares 4 elements"),
        "header_length": ([], b"", [], (1 << 32) - 1, "header length 4294967295 exceeds the cap"),
        "rans_symbols": (*_rans_case(), None, "declares 4294967296 symbols"),
    }


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict:
    """name -> (seconds, error) for every hostile case, loaded in one capped child process."""
    root, cases = tmp_path_factory.mktemp("hostile"), _cases()
    paths = [hostile_artifact(root / f"{name}.lgz", groups, payload, tensors, hlen)
             for name, (groups, payload, tensors, hlen, _) in cases.items()]
    return dict(zip(cases, load_in_child(*paths)))


@pytest.mark.parametrize("name", list(_cases()))
def test_hostile_artifact_fails_fast_with_a_clear_error(refusals, name):
    seconds, err = refusals[name]
    assert _cases()[name][-1] in err, err
    assert seconds < 2, seconds  # the bomb: decoding stops after about 2 KiB of output


def test_bounded_decompress_keeps_every_codec_exact():
    from lila_golf.core.codec import CODEC_NAMES, CodecError, decompress
    data = bytes(range(256)) * 300
    for codec in CODEC_NAMES:
        blob = compress(data, codec)
        assert decompress(blob, codec, max_bytes=len(data)) == data
        with pytest.raises(CodecError, match="expands past"):
            decompress(blob, codec, max_bytes=len(data) - 1)
        with pytest.raises(CodecError):
            decompress(blob[:-3], codec, max_bytes=len(data))
