"""What running on several hosts demands, checked where a mistake would otherwise surface hours
later: shared roots under a distributed executor, CUDA on a GPU worker, the pools the night
uses, and the fsspec options an Airflow connection stands for. Pure functions: the DAG passes
Airflow's executor setting and pools in (tasks/ never imports Airflow)."""

from __future__ import annotations

import errno
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import storage
from tasks.config import Settings
from tasks.errors import ConfigError

# Executors whose tasks of one run may land on different hosts (a hybrid setting such as
# "CeleryExecutor,KubernetesExecutor" or a full class path counts too).
DISTRIBUTED_EXECUTORS = ("CeleryExecutor", "KubernetesExecutor", "EdgeExecutor")


def is_distributed(executor: str) -> bool:
    return any(name in executor for name in DISTRIBUTED_EXECUTORS)


def check_shared_roots(settings: Settings, executor: str) -> None:
    """Refuse worker-local run_root/artifact_root under a distributed executor: the next task,
    on another host, would not find what this one wrote."""
    if not is_distributed(executor) or settings.shared_filesystem:
        return
    roots = {"run_root": settings.run_root or str(settings.home / "runs"),
             "artifact_root": settings.artifact_root or str(settings.models_dir)}
    local = {name: root for name, root in roots.items() if storage.is_local(storage.upath(root))}
    if local:
        raise ConfigError(
            f"{' and '.join(f'{name} ({root})' for name, root in local.items())} "
            f"{'is a folder' if len(local) == 1 else 'are folders'} on this worker's own disk, but "
            f"{executor} runs the tasks of one night on several hosts. Set run_root and "
            "artifact_root in textclf.toml (or TEXTCLF_RUN_ROOT / TEXTCLF_ARTIFACT_ROOT) to an "
            "object store every worker reaches, e.g. s3://bucket/textclf/runs and "
            "s3://bucket/textclf/models, or set shared_filesystem = true if these folders are "
            "a mount every worker shares (NFS, a compose volume)"
        )


# What makes a local root unwritable for good: read-only, refused, not a folder, full.
UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC,
                     errno.EDQUOT}


def check_writable_roots(settings: Settings) -> None:
    """The local folders a night writes to can be written: a read-only or foreign-owned root is
    a configuration error naming its setting, on the first try, not an OSError retried for
    minutes in the middle of a task."""
    roots = {"run_root": settings.run_root or str(settings.home / "runs"),
             "artifact_root": settings.artifact_root or str(settings.models_dir),
             "TEXTCLF_HOME": str(settings.home)}
    for name, root in roots.items():
        path = storage.upath(root)
        if not storage.is_local(path):
            continue
        local = Path(path.path)  # a file:// URI's own path, not the URI as a relative name
        try:
            local.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=local, prefix=".textclf-write-check-"):
                pass
        except OSError as exc:
            if exc.errno not in UNWRITABLE_ERRNOS:
                raise  # EIO, ESTALE, a timeout on NFS: a retry may well succeed
            raise ConfigError(f"{name} ({root}) cannot be written by this worker: {exc.strerror or exc} "
                              f"(errno {exc.errno}); fix its permissions or mount, or point {name} elsewhere") from None


def check_gpu_worker(kind: str, executor: str, cuda_available: bool, allow_cpu_fallback: bool) -> None:
    """A task routed to the gpu queue of a distributed executor that finds no CUDA device fails
    at once instead of grinding on the CPU until its timeout."""
    if cuda_available or allow_cpu_fallback or not is_distributed(executor):
        return
    raise ConfigError(
        f"{kind} runs on the gpu queue, but this worker's torch sees no CUDA device (CPU build of "
        "torch, no driver, or no device visible to the container). Fix the worker, or set "
        "allow_cpu_fallback = true in textclf.toml (TEXTCLF_ALLOW_CPU_FALLBACK=1) to run it on "
        "the CPU"
    )


def check_pools(needed: Mapping[str, int], existing: Mapping[str, int]) -> None:
    """Every pool a task of the night uses exists with at least one slot: a task in a missing
    pool waits forever without an alert."""
    problems = [f"pool {name!r} does not exist" if name not in existing
                else f"pool {name!r} has {existing[name]} slots" for name in sorted(needed)
                if existing.get(name, 0) < 1]
    if problems:
        raise ConfigError(
            f"{'; '.join(problems)}: the tasks that use it would wait forever. Create it with "
            "`airflow pools import docker/pools.json` (or `airflow pools set gpu 1 "
            "'GPU devices'`, one slot per GPU)"
        )


def _extra(extra: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value: Any = extra
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value not in (None, ""):
            return value
    return None


def storage_options_from_connection(conn_type: str, login: str | None, password: str | None,
                                    host: str | None, extra: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """fsspec options per protocol from an Airflow connection, following the fields the
    Amazon, Google and Azure providers read (aws: login = access key id, password = secret,
    extra endpoint_url / region_name / aws_session_token; google_cloud_platform: extra
    key_path or keyfile_dict, project; wasb: login = account name, password = key, extra
    connection_string)."""
    if conn_type == "aws":
        client_kwargs = {k: v for k, v in {"region_name": _extra(extra, "region_name")}.items() if v}
        options = {"key": login, "secret": password,
                   "token": _extra(extra, "aws_session_token"),
                   "endpoint_url": _extra(extra, "endpoint_url", "service_config.s3.endpoint_url", "host")
                   or host or None,
                   "client_kwargs": client_kwargs or None}
        return {"s3": {k: v for k, v in options.items() if v}}
    if conn_type in ("google_cloud_platform", "gcpcloudsql", "gcs"):
        keyfile = _extra(extra, "keyfile_dict", "extra__google_cloud_platform__keyfile_dict")
        token = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
        token = token or _extra(extra, "key_path", "extra__google_cloud_platform__key_path")
        options = {"token": token, "project": _extra(extra, "project", "extra__google_cloud_platform__project")}
        gcs = {k: v for k, v in options.items() if v}
        return {"gs": gcs, "gcs": gcs}
    if conn_type in ("wasb", "adls"):
        options = {"account_name": login or host, "account_key": password,
                   "connection_string": _extra(extra, "connection_string")}
        azure = {k: v for k, v in options.items() if v}
        return {"abfs": azure, "az": azure}
    raise ConfigError(f"storage_conn_id: connections of type {conn_type!r} are not supported for "
                      "run_root/artifact_root (use aws, google_cloud_platform or wasb)")
