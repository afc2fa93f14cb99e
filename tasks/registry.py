"""Model registry: versioned artifacts with checksums, and the champion's history.

Like ``db``, every function takes the cursor of the caller's transaction (and the settings
where it touches artifact storage): a pipeline step opens one connection, and a decision
(the decision row, the champion history, the event) commits or rolls back as one.

Artifacts live under ``$TEXTCLF_HOME/models/<version>/`` by default, or under any fsspec /
universal-pathlib URI set as ``artifact_root``. Every load verifies the sha256 recorded at
registration; a mismatch refuses to load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks import db, storage
from tasks.candidates import KINDS, get_kind
from tasks.config import REPO_ROOT, Settings
from tasks.errors import ChecksumMismatch, RegistryError

log = logging.getLogger(__name__)


CODE_FOLDERS = ("tasks", "dags", "plugins", "expectations")
# What changes behaviour: Python, SQL, and JSON (the expectation suites decide which rows are
# quarantined, so which rows a model trains on, and the data fingerprint is taken before them).
# Templates (the registry page, Alembic's migration template) render text and are left out.
CODE_SUFFIXES = frozenset({".py", ".sql", ".json"})
NO_GIT: dict[str, Any] = {"git_commit": None, "git_dirty": None}


def code_root() -> Path:
    """The tree whose source identifies the running code: ``$TEXTCLF_CODE_ROOT`` (the image sets
    it: its package is installed, not checked out), else the repository."""
    return Path(os.environ.get("TEXTCLF_CODE_ROOT") or REPO_ROOT)


def source_hash(root: Path, folders: Mapping[str, Path] | None = None) -> str:
    """``src-`` and 16 hex digits of the sha256 over every source file (relative path and bytes,
    in sorted order) of ``root``'s code folders, or where ``folders`` says one lives: the same
    source gives the same hash in a checkout and in an image, whatever the commit or tag."""
    files: list[tuple[str, Path]] = []
    for folder in CODE_FOLDERS:
        base = Path((folders or {}).get(folder, root / folder)).resolve()  # follows the image's links
        if base.is_dir():
            files += [
                (f"{folder}/{path.relative_to(base).as_posix()}", path)
                for path in base.rglob("*")
                if path.suffix in CODE_SUFFIXES and "__pycache__" not in path.parts and path.is_file()
            ]
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return "src-" + digest.hexdigest()[:16]


@functools.cache
def _cached_source_hash(root: str, expectations: str | None) -> str:
    return source_hash(Path(root), {"expectations": Path(expectations)} if expectations else None)


def code_version() -> str:
    """The content hash of this process's source, part of every training key: a code fix trains
    again on a re-run or backfill. Computed once per process (and root): the code that runs is
    the code imported, whatever is edited on disk later. The suites hashed are the ones
    validation reads (``$TEXTCLF_EXPECTATIONS_DIR``, as Settings.expectations_dir)."""
    return _cached_source_hash(str(code_root()), os.environ.get("TEXTCLF_EXPECTATIONS_DIR"))


@functools.cache
def _git_state(root: str) -> dict[str, Any]:
    """The commit checked out at ``root`` and whether the code folders differ from it; NO_GIT
    outside a checkout of its own (images copy no .git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              check=True, timeout=5).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root).resolve():
            return NO_GIT  # inside some other repository (an install under a checkout)
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": bool(git("status", "--porcelain", "--", *CODE_FOLDERS))}
    except (OSError, subprocess.SubprocessError):
        return NO_GIT


@functools.cache
def _package_version() -> str | None:
    try:
        return metadata.version("textclf")
    except metadata.PackageNotFoundError:
        return None


def code_identity() -> dict[str, Any]:
    """Everything known about the running code, stored with each model version. Only
    ``source`` (the code version) is in the training key: the same source trains the same model
    whatever commit or image it came from."""
    return {"source": code_version(), **_git_state(str(code_root())),
            "image": os.environ.get("TEXTCLF_CODE_VERSION") or None, "package": _package_version()}


def artifact_checksum(directory) -> tuple[str, int]:
    """sha256 over every file's relative path and bytes, in sorted order; total size."""
    digest = hashlib.sha256()
    size = 0
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(directory).as_posix()
        data = path.read_bytes()
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        size += len(data)
    return digest.hexdigest(), size


def artifact_root(settings: Settings):
    return storage.upath(settings.artifact_root or settings.models_dir)


def register_model(
    cur,
    settings: Settings,
    *,
    kind: str,
    staged_dir: Path,
    labels: list[str],
    params: dict[str, Any],
    metrics: dict[str, Any],
    data_fingerprint: dict[str, Any] | None,
    run_id: str | None,
    logical_date: datetime | None,
    train_seconds: float | None,
    peak_memory_bytes: int | None,
    training_key: str,
) -> int:
    """Store a trained model: a version row, its artifact copied to storage, checksum recorded."""
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    sha256, size = artifact_checksum(staged_dir)
    version = db.upsert_model_version(cur, {
        "kind": kind, "labels": labels, "params": params, "metrics": metrics,
        "artifact_uri": "", "artifact_sha256": sha256, "size_bytes": size,
        "data_fingerprint": data_fingerprint, "code_version": code_version(),
        "code_identity": code_identity(),
        "run_id": run_id, "logical_date": logical_date, "train_seconds": train_seconds,
        "peak_memory_bytes": peak_memory_bytes, "training_key": training_key,
    })
    destination = artifact_root(settings) / str(version)
    try:
        storage.upload_tree(staged_dir, destination)
    except BaseException:
        # Disk full, storage gone: nothing is registered (the caller's transaction rolls the
        # version row back), and no half-written folder is left for a retry to trip over.
        with contextlib.suppress(OSError):
            storage.remove_tree(destination)
        raise
    db.set_model_artifact(cur, version, str(destination), sha256, size)
    return version


def training_key(kind: str, params: dict[str, Any], labels: list[str], data_fingerprint) -> str:
    """Identity of a training: same kind, settings, labels, data and code give the same key."""
    payload = json.dumps(
        [kind, params, labels, data_fingerprint, code_version()], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def find_trained(cur, settings: Settings, key: str) -> int | None:
    """The version already trained under ``key``, if its artifact is intact."""
    row = db.model_version_by_training_key(cur, key)
    if row is None or not row["artifact_uri"] or row.get("artifact_deleted_at"):
        return None
    try:
        fetch_artifact(cur, settings, row["version"])
    except RegistryError as exc:  # gone (deleted by hand): train it again
        log.warning("%s: training it again", exc)
        return None
    # A ChecksumMismatch propagates: an artifact that changed after registration is an incident
    # to look into, not a reason to train quietly over it.
    db.mark_used(cur, row["version"])  # tonight's night may promote it: retention's grace restarts
    return row["version"]


def fetch_artifact(cur, settings: Settings, version: int) -> tuple[dict[str, Any], Path]:
    """The version's row and a verified local directory holding its artifact."""
    row = db.model_version(cur, version)
    if row is None:
        raise RegistryError(f"model version {version} does not exist")
    if row.get("artifact_deleted_at"):
        raise RegistryError(f"the artifact of model version {version} was deleted by retention on "
                            f"{row['artifact_deleted_at']:%Y-%m-%d} (it was never champion)")
    local = storage.local_tree(storage.upath(row["artifact_uri"]),
                               settings.home / "cache" / "models" / str(version), _verifier(row))
    return row, local


def _verifier(row: dict[str, Any]):
    """Checks a local copy of ``row``'s artifact: present, and the sha256 registered."""
    def verify(directory: Path) -> None:
        if not directory.is_dir() or not any(directory.iterdir()):
            raise RegistryError(f"artifact of model version {row['version']} is missing at "
                                f"{row['artifact_uri']}")
        sha256, _ = artifact_checksum(directory)
        if sha256 != row["artifact_sha256"]:
            raise ChecksumMismatch(
                f"model version {row['version']}: artifact at {row['artifact_uri']} has sha256 "
                f"{sha256}, registered {row['artifact_sha256']}; refusing to load it"
            )
    return verify


def load_classifier(kind: str, directory: Path):
    try:
        candidate_kind = get_kind(kind)
    except KeyError as exc:
        raise RegistryError(str(exc).strip("\"'")) from None
    return candidate_kind.load(directory)


def model_row(cur, version: int) -> dict[str, Any]:
    row = db.model_version(cur, version)
    if row is None:
        raise RegistryError(f"model version {version} does not exist")
    return row


def model_kind(cur, version: int) -> str:
    return model_row(cur, version)["kind"]


def load_model(cur, settings: Settings, version: int):
    row, directory = fetch_artifact(cur, settings, version)
    return load_classifier(row["kind"], directory)


# --- champion -----------------------------------------------------------------------------


def current_champion(cur, at: datetime | None = None) -> int | None:
    return db.champion_at(cur, at)


def set_champion(
    cur,
    settings: Settings,
    version: int,
    *,
    reason: str,
    actor: str,
    run_id: str | None = None,
    decision: str = "manual",
    reasons: dict[str, Any] | None = None,
) -> bool:
    """Make ``version`` champion under the champion lock (db.lock_champion), in the caller's
    transaction.

    Records the decision either way; returns False when it already was the champion. A version
    whose artifact is missing or changed since registration (ChecksumMismatch) is refused.
    """
    fetch_artifact(cur, settings, version)  # verified before the lock is taken: it may download
    db.lock_champion(cur)
    # Checked again under the lock: retention may have deleted it since it was verified.
    row = db.model_version(cur, version)
    if row is None:
        raise RegistryError(f"model version {version} does not exist")
    if row["artifact_deleted_at"]:
        raise RegistryError(f"model version {version} cannot be champion: retention deleted its "
                            "artifact (it was never champion); retrain it")
    before = db.champion_at(cur)
    decision_id = db.record_decision(cur, {
        "run_id": run_id, "decision": decision, "champion_before": before,
        "champion_after": version, "reasons": reasons or {"reason": reason}, "actor": actor,
    })
    if before == version:
        return False
    db.switch_champion(cur, version, reason, actor, decision_id)
    db.record_event(cur, run_id, None, f"champion_{decision}",
                    f"model version {version} is champion (was {before}): {reason}")
    return True


def champion_of(cur, data_time: datetime) -> int | None:
    """The champion for data up to ``data_time`` (a run's data interval end): see db.champion_of."""
    return db.champion_of(cur, data_time)


def run_champion(cur, run_id: str, data_time: datetime) -> int | None:
    """The champion a run's predictions come from: its own decision's, unless a rollback has
    revoked that reign since (then, as for a run without a decision, the champion of its date)."""
    decision = db.run_decision(cur, run_id)
    chosen = decision["champion_after"] if decision else None
    if chosen is None or db.reign_revoked(cur, chosen, data_time):
        return db.champion_of(cur, data_time)
    return chosen


def run_decision(cur, run_id: str) -> dict[str, Any] | None:
    return db.run_decision(cur, run_id)


def reign_nights(cur, data_time: datetime) -> list[dict[str, Any]] | None:
    """The nights already judged against the current champion in its reign (interval end,
    night, level), for a run whose data interval ends at ``data_time``; None when that run is
    historical (the current champion took effect after it) and so can never spend budget."""
    current = db.current_champion_row(cur)
    if current is None:
        return []
    if current["effective_from"] > data_time:
        return None
    return db.reign_tested_nights(cur, current["model_version"], current["effective_from"])


def apply_run_decision(
    cur,
    *,
    run_id: str,
    interval_end: datetime,
    expected_champion: int | None,
    winner: int | None,
    summary: str,
    reasons: dict[str, Any],
    actor: str,
    dry_run: bool = False,
    judged_nights: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Record (and apply) a run's promotion decision under the champion lock, in the caller's
    transaction: the decision row, the champion history and the pipeline event commit together.

    - The run already decided: that decision is returned unchanged (a retry is idempotent).
    - The current champion took effect after this run's data interval end: the run is
      historical; its decision is recorded as "historical" and never applied.
    - The champion is no longer ``expected_champion`` (the one the run was judged against), or
      the nights already judged against it are no longer ``judged_nights`` (another date was
      judged meanwhile, so this night's lifetime budget is not the one it was judged with):
      nothing is written and None is returned, so the caller judges again.
    - Otherwise ``winner`` (if any, and not a dry run) becomes champion with effect from
      ``interval_end``, recorded as "promoted"; else "kept".
    """
    db.lock_champion(cur)
    taken = db.run_decision(cur, run_id)
    if taken is not None:
        return {**taken, "replayed": True}
    current = db.current_champion_row(cur)
    record = {"run_id": run_id, "actor": actor, "interval_end": interval_end}
    if current is not None and current["effective_from"] > interval_end:
        of_date = db.champion_of(cur, interval_end)
        summary = (
            f"historical run: not applied (the current champion, version "
            f"{current['model_version']}, decides from {current['effective_from']:%Y-%m-%d %H:%M %Z}, "
            f"after this run's data interval end {interval_end:%Y-%m-%d %H:%M %Z}); the policy said: "
            f"{summary}"
        )
        record.update(decision="historical", champion_before=of_date, champion_after=of_date,
                      reasons={**reasons, "summary": summary})
    elif (current["model_version"] if current else None) != expected_champion:
        return None
    elif (judged_nights is not None and current is not None
          and db.reign_tested_nights(cur, current["model_version"], current["effective_from"]) != judged_nights):
        return None
    elif winner is not None and winner != expected_champion and not dry_run:
        # Checked again under the lock, as set_champion does: retention may have deleted the
        # winner's artifact while the night judged it from stored test scores.
        deleted = (db.model_version(cur, winner) or {}).get("artifact_deleted_at")
        if deleted:
            raise RegistryError(f"model version {winner} won this night, but retention deleted its artifact at "
                                f"{deleted:%Y-%m-%d %H:%M:%S %Z} while it was judged; nothing promoted (raise "
                                "[retention] grace_hours above the night's length, then re-run this date)")
        record.update(decision="promoted", champion_before=expected_champion, champion_after=winner,
                      reasons={**reasons, "summary": summary})
    else:
        if dry_run and winner is not None:
            summary += " (dry run: evaluate only, nothing promoted)"
        record.update(decision="kept", champion_before=expected_champion,
                      champion_after=expected_champion, reasons={**reasons, "summary": summary})
    decision_id = db.record_decision(cur, record)
    if record["decision"] == "promoted" and winner is not None:
        db.switch_champion(cur, winner, summary, actor, decision_id, effective_from=interval_end)
    db.record_event(cur, run_id, "promote", f"decision_{record['decision']}", summary)
    return {**record, "id": decision_id, "replayed": False}


def rollback(cur, settings: Settings, *, actor: str, reason: str = "rollback", run_id: str | None = None) -> int:
    """Make the previous champion the champion again; returns its version."""
    history = db.champion_history(cur)
    if len(history) < 2:
        raise RegistryError("no previous champion to roll back to")
    current = history[-1]["model_version"]
    previous = next(
        (h["model_version"] for h in reversed(history[:-1]) if h["model_version"] != current),
        None,
    )
    if previous is None:
        raise RegistryError("no previous champion to roll back to")
    set_champion(cur, settings, previous, reason=reason, actor=actor, decision="rollback", run_id=run_id)
    return previous


def list_models(cur) -> list[dict[str, Any]]:
    """Every version (oldest first) with its latest test evaluation beside its validation score."""
    models = db.model_versions(cur)
    latest = {row["version"]: row for row in db.leaderboard(cur)}
    for model in models:
        evaluation = latest.get(model["version"], {})
        model["test_macro_f1"] = evaluation.get("test_macro_f1")
        model["evaluated_in"] = evaluation.get("evaluated_in")
    return models


def champion_history(cur) -> list[dict[str, Any]]:
    return db.champion_history(cur)
