"""Retention: what `textclf gc` and the textclf_maintenance DAG delete, and what they never do.

Kept: every model version that was ever champion (a rollback may return to any of them; their
rows in champion_history are the rule, enforced again under the champion lock when deleting),
the newest ``keep_candidates`` versions, and every version younger than ``grace_hours`` (a night
in flight may still promote it; the nightly promotion re-checks its winner's artifact under the
champion lock all the same). Deleted: the artifacts of other versions (the
version row stays, marked, for the audit trail; a retraining with the same key stores it again),
run folders (snapshots, clean rows, reports, data docs) of runs validated more than
``max_age_days`` ago, and worker-local checkpoints, scratch and model caches untouched for as long.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks import db, storage
from tasks.config import Settings, safe_name

log = logging.getLogger(__name__)


@dataclass
class Freed:
    what: str
    where: str
    bytes: int


@dataclass
class RetentionReport:
    dry_run: bool
    freed: list[Freed] = field(default_factory=list)
    kept_versions: list[int] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(f.bytes for f in self.freed)

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        counts: dict[str, int] = {}
        for item in self.freed:
            counts[item.what] = counts.get(item.what, 0) + 1
        parts = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing"
        return f"retention {verb} {self.bytes_freed / 2**20:.1f} MiB: {parts}"

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "bytes_freed": self.bytes_freed, "summary": self.summary(),
                "freed": [f.__dict__ for f in self.freed]}


def _tree_bytes(path: storage.UPath | Path) -> int:
    try:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except FileNotFoundError:
        return 0


def _old_local_dirs(parent: Path, cutoff: float) -> list[Path]:
    """Subdirectories of ``parent`` in which nothing changed since ``cutoff`` (epoch seconds)."""
    if not parent.is_dir():
        return []
    old = []
    for child in sorted(parent.iterdir()):
        if child.is_dir():
            newest = max((p.stat().st_mtime for p in child.rglob("*")), default=child.stat().st_mtime)
            if newest < cutoff:
                old.append(child)
    return old


def registry_root(settings: Settings) -> storage.UPath:
    """Where model artifacts live (as tasks.registry.artifact_root: retention sits below it)."""
    return storage.upath(settings.artifact_root or settings.models_dir)


def _newest_change(directory: storage.UPath) -> float | None:
    """The latest modification time in ``directory`` (epoch seconds); None when the store does
    not say (then the folder is kept)."""
    try:
        times = [p.stat().st_mtime for p in directory.rglob("*") if p.is_file()]
        return max(times) if times else float(directory.stat().st_mtime)
    except (OSError, AttributeError, TypeError, ValueError):
        return None


# What the folders under each root are named (registry: the version; runs: safe_name(run_id),
# never all digits): a folder of another shape is not ours to sweep.
ARTIFACT_FOLDER = re.compile(r"^\d+$")
RUN_FOLDER = re.compile(r"^(?!\d+$)[A-Za-z0-9][A-Za-z0-9._-]*$")
ORPHAN_MIN_AGE = timedelta(hours=1)  # an upload whose version row is not committed yet is young


def _overlap(a: storage.UPath, b: storage.UPath) -> str | None:
    """The roots when one is the other or lies inside it (then a sweep of one would see the other's folders)."""
    first, second = str(a).rstrip("/") + "/", str(b).rstrip("/") + "/"
    return f"{a}, {b}" if first.startswith(second) or second.startswith(first) else None


def _unknown_old_dirs(parent: storage.UPath, known: set[str], cutoff: float, pattern: re.Pattern[str]
                      ) -> list[storage.UPath]:
    """Subfolders of ``parent`` named like ``pattern`` but not in ``known``, in which nothing
    changed since ``cutoff``."""
    try:
        children = sorted(c for c in parent.iterdir() if c.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    old = []
    for child in children:
        ours = pattern.match(child.name) and child.name not in known
        newest = _newest_change(child) if ours else None
        if newest is not None and newest < cutoff:
            old.append(child)
    return old


def collect_garbage(settings: Settings, *, dry_run: bool = False, now: datetime | None = None) -> RetentionReport:
    policy = settings.retention
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=policy.max_age_days)
    report = RetentionReport(dry_run=dry_run)

    with db.connect(settings) as conn, conn.cursor() as cur:
        candidates = db.retention_candidates(cur, policy.keep_candidates, policy.grace_hours)
        old_runs = db.runs_validated_before(cur, cutoff)
        validated = {safe_name(run_id) for run_id in db.validated_run_ids(cur)}
        versions = {str(version) for version in db.version_numbers(cur)}
    for row in candidates:
        uri = storage.upath(row["artifact_uri"])
        size = row["size_bytes"] or _tree_bytes(uri)
        if not dry_run:
            with db.connect(settings) as conn, conn, conn.cursor() as cur:
                db.lock_champion(cur)  # no promotion can pick it while it goes
                if not db.mark_artifact_deleted(cur, row["version"], policy.grace_hours):
                    continue
            storage.remove_tree(uri)
        report.freed.append(Freed(f"model artifact (v{row['version']} {row['kind']})", str(uri), size))
    for run_id in old_runs:
        run_dir = settings.run_dir(run_id)
        if run_dir.exists():
            size = _tree_bytes(run_dir)
            if not dry_run:
                storage.remove_tree(run_dir)
            report.freed.append(Freed("run folder", str(run_dir), size))
    # Folders nothing in the database points at: a run that failed before validation recorded
    # it, an artifact whose registration never committed (a crash between upload and commit).
    run_root, models_root = storage.upath(settings.run_root or settings.home / "runs"), registry_root(settings)
    orphans = (("run folder (never validated)", run_root, validated, cutoff, RUN_FOLDER),
               ("artifact folder (no version row)", models_root, versions,
                now - max(timedelta(hours=policy.grace_hours), ORPHAN_MIN_AGE), ARTIFACT_FOLDER))
    overlapping = _overlap(run_root, models_root)
    if overlapping:
        log.warning("run_root and artifact_root overlap (%s): folders without a database row are not swept",
                    overlapping)
    for label, root, known, older_than, pattern in () if overlapping else orphans:
        for orphan in _unknown_old_dirs(root, known, older_than.timestamp(), pattern):
            size = _tree_bytes(orphan)
            if not dry_run:
                storage.remove_tree(orphan)
            report.freed.append(Freed(label, str(orphan), size))
    for what, parent in (("checkpoints", settings.home / "checkpoints"), ("scratch", settings.home / "scratch"),
                         ("model cache", settings.home / "cache" / "models")):
        for directory in _old_local_dirs(parent, cutoff.timestamp()):
            size = _tree_bytes(directory)
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
            report.freed.append(Freed(what, str(directory), size))
    for item in report.freed:
        log.info("%s %s: %s (%.1f MiB)", "would delete" if dry_run else "deleted", item.what, item.where,
                 item.bytes / 2**20)
    log.info("%s", report.summary())
    return report

