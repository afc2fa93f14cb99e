"""Run data and artifacts on shared storage.

Everything one task hands to another (snapshots, clean rows, evaluation results, reports,
registered models) lives under an fsspec URI: ``run_root`` and ``artifact_root`` in
textclf.toml (``s3://...``, ``gs://...``, a shared mount, ...; default: folders under
$TEXTCLF_HOME). Tasks pass these URIs, never a worker-local path, so consecutive tasks can run
on different hosts. What a task only needs for itself (a model being written before it is
registered, training checkpoints, the verified model cache) stays under $TEXTCLF_HOME.

Credentials: the standard environment of each store (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...), or inside Airflow the connection
named by ``storage_conn_id``, turned into fsspec options by ``use_storage_options`` (fsspec's
per-protocol defaults, as Airflow's ObjectStoragePath resolves a conn_id).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath

LOCAL_PROTOCOLS = ("", "file", "local")


def upath(uri: str | Path | UPath) -> UPath:
    from upath import UPath

    return UPath(uri)


def is_local(path: UPath) -> bool:
    return path.protocol in LOCAL_PROTOCOLS


def ensure_parent(path: UPath) -> UPath:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_text(path: UPath, text: str) -> None:
    ensure_parent(path).write_text(text)


def read_text(uri: str | UPath) -> str:
    return upath(uri).read_text()


def write_parquet(frame: pd.DataFrame, path: UPath) -> None:
    with ensure_parent(path).open("wb") as fh:
        frame.to_parquet(fh, index=False)


def read_parquet(uri: str | UPath) -> pd.DataFrame:
    import pyarrow.parquet as pq

    with upath(uri).open("rb") as fh:
        return pq.read_table(fh).to_pandas()


def remove_tree(path: UPath) -> None:
    if not path.exists():
        return
    if is_local(path):
        shutil.rmtree(path.path)
    else:
        path.fs.rm(path.path, recursive=True)


def upload_tree(source: Path, destination: UPath) -> None:
    """Copy a local directory to ``destination`` (replacing what was there)."""
    remove_tree(destination)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        target = destination / file.relative_to(source).as_posix()
        ensure_parent(target).write_bytes(file.read_bytes())


def use_storage_options(options_by_protocol: dict[str, dict[str, Any]]) -> None:
    """Default fsspec options per protocol (``{"s3": {"key": ..., "endpoint_url": ...}}``) for
    every filesystem this process opens afterwards."""
    import fsspec.config

    for protocol, options in options_by_protocol.items():
        fsspec.config.conf[protocol] = {**fsspec.config.conf.get(protocol, {}), **options}


def download_tree(source: UPath, target: Path) -> None:
    for file in source.rglob("*"):
        if file.is_file():
            destination = target / file.relative_to(source).as_posix()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(file.read_bytes())


def local_tree(source: UPath, cache: Path, verify: Callable[[Path], None]) -> Path:
    """A verified local directory holding ``source``: itself when local (verified in place), else
    ``cache``. A cache that fails ``verify`` is replaced; a download goes to a temporary folder
    next to ``cache``, is verified there and renamed into place, so a reader never sees a
    partial copy and concurrent loads of one version on one host all succeed (whoever renames
    first wins; the others keep the winner's identical copy)."""
    if is_local(source):
        verify(Path(source.path))
        return Path(source.path)
    if cache.is_dir():
        try:
            verify(cache)
            return cache
        except Exception:
            _discard(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    try:
        download_tree(source, staging)
        verify(staging)
        try:
            staging.rename(cache)
        except OSError:
            if not cache.is_dir():  # not a lost race: a real error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return cache


def _discard(directory: Path) -> None:
    """Remove a directory by renaming it aside first, so it vanishes at once for other readers."""
    aside = directory.with_name(f".{directory.name}-discarded-{os.getpid()}")
    try:
        directory.rename(aside)
    except OSError:
        return  # another process discarded or replaced it already
    shutil.rmtree(aside, ignore_errors=True)


def move(source: UPath, destination: UPath) -> None:
    """Rename within one filesystem (atomic on a local disk, a copy then delete on object stores)."""
    if is_local(source):
        Path(source.path).replace(destination.path)
    else:
        source.fs.mv(source.path, destination.path)

