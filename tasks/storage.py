"""Run data and artifacts on shared storage.

Everything one task hands to another (snapshots, clean rows, evaluation results, reports,
registered models) lives under an fsspec URI: ``run_root`` and ``artifact_root`` in
textclf.toml (``s3://...``, ``gs://...``, a shared mount, ...; default: folders under
$TEXTCLF_HOME). Tasks pass these URIs, never a worker-local path, so consecutive tasks can run
on different hosts. What a task only needs for itself (a model being written before it is
registered, training checkpoints) stays in worker-local scratch under $TEXTCLF_HOME.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

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


def local_tree(source: UPath, cache: Path) -> Path:
    """A local directory holding ``source``: itself when local, else a fresh copy in ``cache``."""
    if is_local(source):
        return Path(source.path)
    if cache.exists():
        shutil.rmtree(cache)
    for file in source.rglob("*"):
        if file.is_file():
            target = cache / file.relative_to(source).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    return cache


def move(source: UPath, destination: UPath) -> None:
    """Rename within one filesystem (atomic on a local disk, a copy then delete on object stores)."""
    if is_local(source):
        Path(source.path).replace(destination.path)
    else:
        source.fs.mv(source.path, destination.path)

