"""`lila-golf data fetch`: the challenge's published FineWeb shards and tokenizer, from the HF hub.

    python -m lila_golf data fetch --variant sp1024 --train-shards 1          # challenge FineWeb -> ./data

The files land in the challenge layout: out/datasets/fineweb10B_<variant>/, out/tokenizers/ and
out/manifest.json. An unreachable hub fails within seconds, saying how to get the files otherwise.
"""
import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..core.config import environment
from ..core.data import shard_file

HF_REPO_ID = "willdepueoai/parameter-golf"
HF_REMOTE_ROOT = "datasets"  # the published export lives under this folder of the dataset repo
# proxies the hub client honours: behind one, a direct TCP probe of the hub says nothing
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


class FetchError(RuntimeError):
    """The hub could not be reached or did not have what was asked for."""


def _hub_reachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to the hub opens within `timeout`, else the reason.
    Skipped (None) behind a proxy, which a direct probe cannot judge."""
    env = environment()
    if any(env.get(k) for k in PROXY_VARIABLES):
        return None
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {url.hostname}:{port} ({exc})"
    return None


def _offline_advice(out: Path, reason: str) -> str:
    return (f"could not reach the Hugging Face hub: {reason}.\n"
            "  - behind a mirror or proxy: set HF_ENDPOINT (or pass --endpoint) / HTTPS_PROXY and retry;\n"
            f"  - or copy the files by hand: shards into {out}/datasets/fineweb10B_sp1024/, the tokenizer "
            f"into {out}/tokenizers/ (from https://huggingface.co/datasets/{HF_REPO_ID}/tree/main/{HF_REMOTE_ROOT});\n"
            "  - or run without FineWeb: the embedded corpus is used (scores labelled not FineWeb).")


def _hub_get(remote_path: str, destination: Path, endpoint: str | None, repo_id: str = HF_REPO_ID) -> None:
    """Download `<HF_REMOTE_ROOT>/remote_path` from the dataset repo to `destination` (skip if present)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    if destination.is_file() and destination.stat().st_size > 0:
        return
    subfolder, _, filename = f"{HF_REMOTE_ROOT}/{remote_path}".rpartition("/")
    try:
        cached = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=filename, subfolder=subfolder,
                                                 repo_type="dataset", endpoint=endpoint)
    except LocalEntryNotFoundError as exc:  # offline and not cached
        raise FetchError(_offline_advice(destination.parents[1], str(exc).splitlines()[0])) from None
    except EntryNotFoundError:
        raise FetchError(f"{subfolder}/{filename} is not in the hub dataset {repo_id}") from None
    destination.parent.mkdir(parents=True, exist_ok=True)
    source = Path(cached).resolve(strict=True)  # the hub cache may hand back a symlink
    tmp = destination.with_name(destination.name + ".part")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)


def _variant_dataset(variant: str) -> str:
    if variant == "byte260" or (variant.startswith("sp") and variant[2:].isdigit()):
        return f"fineweb10B_{variant}"
    raise ValueError(f"unknown variant {variant!r}: expected sp<VOCAB> (e.g. sp1024) or byte260")


def _hub_shard(dataset_dir: str, split: str, index: int) -> str:
    """A shard's path in the hub dataset, '/'-separated on every OS (shard_file joins with os.sep)."""
    return Path(shard_file(f"datasets/{dataset_dir}", split, index)).as_posix()


def fetch_challenge_data(variant: str = "sp1024", train_shards: int = 1, out="data",
                         endpoint: str | None = None, repo_id: str = HF_REPO_ID) -> dict:
    """Download the val shards, the first `train_shards` train shards and the tokenizer of a dataset
    repo in the challenge's layout (the official one holds sp1024; community exports such as
    kevclark/parameter-golf hold sp4096 / sp8192) into out/datasets/fineweb10B_<variant>/,
    out/tokenizers/, out/manifest.json. Each repo's manifest is kept apart (manifest.<repo>.json)."""
    from tqdm import tqdm
    import huggingface_hub.constants
    out, dataset_dir = Path(out), _variant_dataset(variant)
    if train_shards < 0:
        raise ValueError(f"--train-shards must be >= 0, got {train_shards}")
    manifest_path = out / ("manifest.json" if repo_id == HF_REPO_ID else f"manifest.{repo_id.replace('/', '__')}.json")
    if not manifest_path.is_file():
        reason = _hub_reachable(endpoint or huggingface_hub.constants.ENDPOINT)
        if reason:
            raise FetchError(_offline_advice(out, reason))
    _hub_get("manifest.json", manifest_path, endpoint, repo_id)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    dataset = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset_dir), None)
    if dataset is None:
        names = [d.get("name") for d in manifest.get("datasets", [])]
        raise FetchError(f"{dataset_dir} is not in the manifest of {repo_id} ({manifest_path}; it lists {names})")
    stats = dataset.get("stats") or {}
    if train_shards > int(stats.get("files_train", 0)):
        raise ValueError(f"{variant} has {stats.get('files_train')} train shards, asked for {train_shards}")
    tokenizer = next((t for t in manifest.get("tokenizers", []) if t.get("name") == dataset.get("tokenizer_name")), None)
    if tokenizer is None:
        raise FetchError(f"the manifest of {repo_id} names no tokenizer {dataset.get('tokenizer_name')!r} for {dataset_dir}")
    files = [_hub_shard(dataset_dir, "val", i) for i in range(int(stats.get("files_val", 1)))]
    files += [_hub_shard(dataset_dir, "train", i) for i in range(train_shards)]
    files += [tokenizer[k] for k in ("model_path", "vocab_path", "path") if tokenizer.get(k)]
    for remote in tqdm(files, unit="file", desc=f"fetch {variant}", disable=None):
        _hub_get(remote, out / remote, endpoint, repo_id)
    return {"data_dir": str(out / "datasets" / dataset_dir), "files": [str(out / f) for f in files]}


