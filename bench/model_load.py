"""Loading a champion from the object store against loading it from local disk: the packaged
MiniLM fine-tune format (a BERT champion, about 90 MB of safetensors), registered checksum
verified in both cases, as `registry.fetch_artifact` does. The store is a real S3 API (moto's
server on loopback, so the network is the loopback's: a cloud store adds its own latency and
bandwidth). Three lines' worth in one: a cold cache (download, verify, rename into place), a
warm cache (verify the cached copy), each against the local load.

    python bench/model_load.py --repeats 5     # make bench
    python bench/model_load.py --repeats 2     # make bench-quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result  # noqa: E402


def _bert_artifact(directory: Path) -> None:
    import json

    from transformers import AutoTokenizer

    from tasks.candidates.bert.model import INFERENCE_CONFIG_NAME, resolve_checkpoint
    from tasks.candidates.bert.training import _new_model

    checkpoint = resolve_checkpoint("")
    _new_model(checkpoint, "mean", ["negative", "neutral", "positive"]).save_pretrained(directory)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(directory)
    (directory / INFERENCE_CONFIG_NAME).write_text(json.dumps(
        {"max_length": 128, "head_fraction": 0.25, "pooling": "mean"}))


def _median_seconds(load, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        started = time.perf_counter()
        load()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def run(repeats: int) -> list[Result]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import boto3
    from moto.server import ThreadedMotoServer

    from tasks import storage
    from tasks.candidates import get_kind
    from tasks.registry import artifact_checksum

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="textclf-bench")
    work = Path(tempfile.mkdtemp(prefix="textclf-bench-load-"))
    try:
        local = work / "models" / "1"
        _bert_artifact(local)
        expected, size = artifact_checksum(local)
        remote = storage.upath("s3://textclf-bench/models/1")
        storage.upload_tree(local, remote)
        cache = work / "cache" / "models" / "1"
        load = get_kind("bert").load

        def verify(directory: Path) -> None:
            assert artifact_checksum(directory)[0] == expected

        def from_disk():
            return load(storage.local_tree(storage.upath(local), cache, verify))

        def from_store():
            return load(storage.local_tree(remote, cache, verify))

        from_disk()  # warm-up: imports, the page cache
        local_s = _median_seconds(from_disk, repeats)
        cold_s = _median_seconds(from_store, repeats, before=lambda: shutil.rmtree(cache, ignore_errors=True))
        warm_s = _median_seconds(from_store, repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    note = f"{size / 2**20:.0f} MiB BERT artifact, median of {repeats}, S3 = moto on loopback"
    return [
        Result("model_load_object_store_cold", cold_s, "s", local_s, "s from local disk",
               "ratio <= 4", cold_s <= 4 * local_s, note),
        Result("model_load_object_store_warm", warm_s, "s", local_s, "s from local disk",
               "ratio <= 1.25", warm_s <= 1.25 * local_s, note),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for result in run(args.repeats):
        print(result.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
