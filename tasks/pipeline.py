"""The steps of the retrain pipeline, one function per DAG task.

Each step takes plain values (ids, paths, dicts) and returns a small JSON-able dict, so the
DAG passes references through XCom, never data. A step that has nothing to do raises
``Skip`` with the reason; the DAG turns it into a skipped task whose log shows that reason.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import resource
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from tasks import db, registry, storage
from tasks.candidates import KINDS, get_kind
from tasks.candidates.base import MAX_TRAIN_ROWS, CandidateConfig, TrainingJob
from tasks.candidates.bert.config import HUB_ID_PATTERN
from tasks.config import Settings, safe_name
from tasks.errors import InputError, RegistryError, Skip
from tasks.normalize import near_duplicate_labels, normalize_label, normalize_labels
from tasks.typed import replace_checked

__all__ = ["RunOptions", "Skip", "evaluate_step", "extract_step", "predict_step", "promote_step",
           "train_step", "validate_step"]
from tasks.extract import (
    SCHEME_V1,
    Snapshot,
    extract_snapshot,
    read_snapshot,
    scheme_options,
    split_key_text,
    split_under_scheme,
)

log = logging.getLogger(__name__)


# --- extract + validate ----------------------------------------------------------------


def extract_step(
    settings: Settings,
    run_id: str,
    start: datetime | None,
    end: datetime | None,
    run_after: datetime | None = None,
) -> dict:
    if start is None or end is None:
        # A manual run triggered without a logical date has no data interval: take the last
        # complete nightly interval before it was triggered, as a scheduled run would.
        from tasks.airflow_env import manual_run_interval

        if run_after is None:
            raise ValueError("a run needs a data interval or a run_after time")
        start, end = manual_run_interval(run_after.date())
        log.info("run without a data interval: using [%s, %s)", start, end)
    from tasks.airflow_env import check_interval

    check_interval(start, end)
    snapshot = extract_snapshot(settings, start, end, settings.run_dir(run_id) / "snapshot.parquet")
    log.info(
        "snapshot: %d rows (%d new in [%s, %s)), splits %s",
        snapshot.snapshot_rows, snapshot.new_rows, start, end, snapshot.split_rows,
    )
    return snapshot.to_dict()


@dataclass
class LabelSet:
    """The labels a run trains on and where they came from; while the set is being learned,
    the labels kept out and why."""

    labels: list[str]
    origin: str  # "configured", "stored" or "first snapshot" (learned now, or not yet)
    not_admitted: dict[str, int] = field(default_factory=dict)  # label -> rows, below the threshold
    threshold: int = 0
    near_duplicates: list[tuple[str, str]] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"labels {a!r} and {b!r} differ by one character: probably one class typed two ways; "
                "correct the source rows, or list the real labels as `labels` in textclf.toml"
                for a, b in self.near_duplicates]

    def reason_for(self, label: str) -> str | None:
        rows = self.not_admitted.get(label)
        if rows is None:
            return None
        return (f"label {label!r} is on {rows} row{'s' if rows != 1 else ''} of the first snapshot, fewer "
                f"than min_label_rows ({self.threshold}): not admitted to the label set (lower "
                "min_label_rows, or list the labels as `labels` in textclf.toml)")


def admission_threshold(settings: Settings, snapshot_rows: int) -> int:
    """Rows a label needs to be admitted while the set is learned: min_label_rows, or 0.1% of the
    snapshot when that is fewer (a small first snapshot still learns), never fewer than 2."""
    return min(settings.min_label_rows, max(2, math.ceil(0.001 * snapshot_rows)))


def resolve_label_set(settings: Settings, cur, snapshot_labels, run_id: str) -> LabelSet:
    """Configured labels, else the stored set, else (first run) the snapshot's own labels with
    enough rows each, kept for later runs only when there are at least two and no two of them
    are one character apart: a first snapshot with one label (or none), a stray row or a typo
    must not decide the label set for good. Every label is normalised (tasks.normalize)."""
    if settings.labels:
        return LabelSet(list(settings.labels), "configured")
    stored = db.stored_label_set(cur)
    if stored:
        stored = normalize_labels(stored, settings.label_case_fold)
    if stored and len(stored) >= 2:
        return LabelSet(stored, "stored")
    counts: Counter[str] = Counter()
    for raw, rows in Counter(snapshot_labels).items():  # normalise each distinct label once
        if label := normalize_label(raw, settings.label_case_fold):
            counts[label] += rows
    threshold = admission_threshold(settings, sum(counts.values()))
    learned = LabelSet(sorted(label for label, n in counts.items() if n >= threshold), "first snapshot",
                       not_admitted={label: n for label, n in counts.items() if n < threshold},
                       threshold=threshold)
    learned.near_duplicates = near_duplicate_labels(learned.labels)
    if len(learned.labels) >= 2 and not learned.near_duplicates:
        db.store_label_set(cur, learned.labels, "first snapshot", run_id)
    return learned


def validate_step(
    settings: Settings, run_id: str, logical_date: datetime | None, snapshot: dict
) -> dict:
    from tasks.validate import ValidationParams, quarantine_entries, unknown_label_failures, validate_snapshot

    snap = Snapshot.from_dict(snapshot)
    frame = read_snapshot(snap.path)
    run_dir = settings.run_dir(run_id)
    scratch = settings.scratch_dir(run_id)
    with db.transaction(settings) as cur:
        label_set = resolve_label_set(settings, cur, frame["label"], run_id)
    labels = label_set.labels
    outcome = validate_snapshot(
        frame,
        ValidationParams(label_set=labels, interval_end=snap.interval_end, thresholds=settings.validation,
                         allow_new_labels=settings.allow_new_labels,
                         set_aside_labels=frozenset(label_set.not_admitted)),
        settings.expectations_dir,
        data_docs_dir=scratch / "data_docs",
    )
    clean_path = run_dir / "clean.parquet"
    storage.write_parquet(outcome.clean, clean_path)
    data_docs = None
    if outcome.data_docs_path is not None:
        storage.upload_tree(scratch / "data_docs", run_dir / "data_docs")
        data_docs = str(run_dir / "data_docs" / outcome.data_docs_path.name)
    if outcome.new_labels:
        labels = sorted(set(labels) | set(outcome.new_labels))
    for row in outcome.quarantined:
        if row.column == "label" and (reason := label_set.reason_for(row.value)):
            row.reason = reason
    if label_set.problems():
        outcome.status = "failed"
        outcome.failures = [*outcome.failures, *label_set.problems()]
    if label_set.origin != "first snapshot" and not outcome.new_labels and (unknown := unknown_label_failures(
            frame.loc[frame["is_new"].fillna(False).astype(bool), "label"], labels, label_set.origin)):
        outcome.status = "failed"
        outcome.failures = [*outcome.failures, *unknown]
    entries, quarantined_rows = quarantine_entries(
        frame, outcome, settings.labelled_source.qualified_name, run_id, no_id=db.NO_ID)
    absent = absent_labels(labels, outcome.clean["label"])
    with db.transaction(settings) as cur:
        if outcome.new_labels:
            db.store_label_set(cur, labels, "new labels allowed by config", run_id)
        db.quarantine_rows(cur, entries)
        db.record_validation_run(cur, {
            "run_id": run_id, "logical_date": logical_date,
            "interval_start": snap.interval_start, "interval_end": snap.interval_end,
            "status": outcome.status, "new_rows": outcome.new_rows,
            "snapshot_rows": outcome.snapshot_rows,
            "quarantined_rows": quarantined_rows,
            "failures": outcome.failures, "results": outcome.results,
            "fingerprint": snap.fingerprint,
            "data_docs_path": data_docs,
            "snapshot_path": snap.path,
        })
        if absent:
            db.record_event(cur, run_id, "validate", "labels_absent",
                            f"label(s) of the set with no row in the snapshot: {', '.join(map(repr, absent))}; "
                            "macro-F1 leaves them out; list the real labels as `labels` in textclf.toml to retire them")
    for failure in outcome.failures:
        log.error("validation: %s", failure)
    if absent:
        log.warning("label(s) of the set with no row in the snapshot: %s (macro-F1 leaves them out; retire them "
                    "with labels = [...] in textclf.toml)", ", ".join(map(repr, absent)))
    return {
        "status": outcome.status,
        "reason": "; ".join(outcome.failures) if outcome.failures else None,
        "labels": labels,
        "clean_path": str(clean_path),
        "new_rows": outcome.new_rows,
        "snapshot_rows": outcome.snapshot_rows,
        "quarantined_rows": quarantined_rows,
        "fingerprint": snap.fingerprint,
        "data_docs": data_docs,
        "interval_start": snap.interval_start.isoformat(),
        "interval_end": snap.interval_end.isoformat(),
        "absent_labels": absent,
    }


def absent_labels(labels: Sequence[str], snapshot_labels) -> list[str]:
    """Labels of the set that no row of the snapshot carries: a class renamed or retired in the
    source stays in a stored set until someone lists the real labels."""
    present = set(snapshot_labels)
    return [label for label in labels if label not in present]


def require_validated(validation: dict | None) -> None:
    """The snapshot was extracted and validated (its tasks did not fail): else a bookkeeping
    task has nothing to summarise and skips at once, without repeating their error."""
    if validation is None:
        raise Skip("the snapshot was not extracted and validated (an earlier task failed)")


def require_candidates(validation: dict | None, candidates: Sequence[dict | None]) -> None:
    """At least one candidate was trained (or reused) in this run: else nothing to score."""
    require_validated(validation)
    if not any(candidates):
        raise Skip("no candidate was trained in this run")


def require_trainable(validation: dict) -> None:
    if validation["status"] == "no_new_data":
        raise Skip("no new labelled rows in this data interval: nothing to retrain on")
    if validation["status"] == "failed":
        raise Skip(f"validation failed, training skipped: {validation['reason']}")


# --- run options ---------------------------------------------------------------------------

def check_run_conf(conf: Mapping[str, Any], known: Iterable[str]) -> None:
    """A trigger's conf may only set the DAG's Params, within bounds: a misspelt key would be
    ignored silently, a huge row count or a path in bert_checkpoint must not reach training."""
    unknown = sorted(set(conf) - set(known))
    if unknown:
        raise InputError(f"unknown run conf key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    for key in ("max_train_rows", "bert_max_train_rows"):
        value = conf.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 10 <= value <= MAX_TRAIN_ROWS):
            raise InputError(f"run conf {key}: {value!r} is not a whole number of rows in [10, {MAX_TRAIN_ROWS:,}]")
    checkpoint = conf.get("bert_checkpoint")
    if checkpoint not in (None, "") and not (isinstance(checkpoint, str) and re.match(HUB_ID_PATTERN, checkpoint)):
        raise InputError(f"run conf bert_checkpoint: {checkpoint!r} is not a hub id; local checkpoint "
                         "directories are set in textclf.toml ([bert] checkpoint)")


# DAG Params that set one field of one kind's config ("bert_epochs" -> [bert] epochs).
KIND_PARAMS: dict[str, tuple[str, str]] = {
    "bert_checkpoint": ("bert", "checkpoint"),
    "bert_epochs": ("bert", "epochs"),
    "bert_max_train_rows": ("bert", "max_train_rows"),
    "bert_max_length": ("bert", "max_length"),
    "bert_learning_rate": ("bert", "learning_rate"),
}


@dataclass(frozen=True)
class RunOptions:
    """What one run may change. ``None`` everywhere means "as configured" (textclf.toml)."""

    candidates: tuple[str, ...] | None = None
    max_train_rows: int | None = None  # every kind, unless the kind's own override sets it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> config fields
    learning_curve: bool = False
    progress: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunOptions:
        """From the DAG's Params: an empty form field (None) leaves the configuration alone."""
        overrides: dict[str, dict[str, Any]] = {}
        for param, (kind, key) in KIND_PARAMS.items():
            if params.get(param) not in (None, ""):
                overrides.setdefault(kind, {})[key] = params[param]
        candidates = params.get("candidates")
        return cls(
            candidates=tuple(candidates) if candidates else None,
            max_train_rows=params.get("max_train_rows"),
            overrides=overrides,
            learning_curve=bool(params.get("learning_curve")),
        )

    def enabled(self, settings: Settings) -> tuple[str, ...]:
        return self.candidates or settings.candidates

    def config(self, settings: Settings, kind: str) -> CandidateConfig:
        """The kind's configuration with this run's overrides, type-checked."""
        changes = dict(self.overrides.get(kind, {}))
        if self.max_train_rows is not None:
            changes.setdefault("max_train_rows", self.max_train_rows)
        config = settings.candidate_config(kind)
        return replace_checked(config, changes, kind) if changes else config


# --- training ----------------------------------------------------------------------------


def load_splits(clean_path: str, max_train_rows: int | None = None):
    """(train, validation, test) frames of the clean snapshot. ``max_train_rows`` keeps the
    newest training rows (``labelled_at``, then id): the freshest signal, the same rows on
    every rerun."""
    frame = read_snapshot(clean_path)
    train = frame[frame["split"] == "train"]
    if max_train_rows and len(train) > max_train_rows:
        train = train.sort_values(["labelled_at", "id"]).tail(max_train_rows)
    return train, frame[frame["split"] == "validation"], frame[frame["split"] == "test"]


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_step(
    settings: Settings,
    kind_name: str,
    run_id: str,
    logical_date: datetime | None,
    validation: dict,
    options: RunOptions | None = None,
) -> dict:
    """Train one candidate on the clean snapshot and register it; returns its version."""
    require_trainable(validation)
    options = options or RunOptions()
    kind = get_kind(kind_name)
    if kind_name not in options.enabled(settings):
        raise Skip(f"candidate kind {kind_name!r} is not enabled for this run")
    config = options.config(settings, kind_name)
    labels = validation["labels"]
    key = registry.training_key(kind_name, asdict(config), labels, validation["fingerprint"])
    checkpoint_dir = settings.home / "checkpoints" / safe_name(run_id) / kind_name
    with db.transaction(settings) as cur:
        existing = registry.find_trained(cur, settings, key)
    if existing is not None:
        log.info("same kind, settings, labels, data and code as model version %d: reusing it",
                 existing)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return {"version": existing, "kind": kind_name, "train_seconds": 0.0, "reused": True}
    train, val, _ = load_splits(validation["clean_path"], config.max_train_rows)
    job = TrainingJob(
        train=train, validation=val, labels=labels,
        output_dir=settings.scratch_dir(run_id) / "candidates" / kind_name,
        checkpoint_dir=checkpoint_dir,
        progress=options.progress,
    )
    started = time.perf_counter()
    trained = kind.train(job, config)
    train_seconds = time.perf_counter() - started
    with db.transaction(settings) as cur:
        version = registry.register_model(
            cur, settings, kind=kind_name, staged_dir=job.output_dir, labels=labels,
            params={**trained.params, "train_rows": len(train)}, metrics=trained.metrics,
            data_fingerprint=validation["fingerprint"], run_id=run_id, logical_date=logical_date,
            train_seconds=train_seconds,
            peak_memory_bytes=trained.peak_memory_bytes or _peak_rss_bytes(), training_key=key,
        )
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # registered: nothing left to resume
    log.info("registered %s as model version %d (%.1f s)", kind_name, version, train_seconds)
    return {"version": version, "kind": kind_name, "train_seconds": train_seconds}


# --- evaluation, promotion, prediction ----------------------------------------------------


def device_of(kind: str) -> str:
    """Where a kind's model scores: "gpu" (its tasks go to the gpu queue) or "cpu"."""
    return "gpu" if kind in KINDS and get_kind(kind).needs_gpu else "cpu"


def _models_to_evaluate(cur, validation: dict, candidates: Sequence[dict | None]) -> tuple[list[int], int | None]:
    """This run's candidate versions plus the champion of the run's date (the current one, or
    for a backfill of a date before the current champion took effect, the one that date had)."""
    versions = sorted({c["version"] for c in candidates if c})
    if not versions:
        raise Skip("no candidate was trained in this run")
    champion = registry.champion_of(cur, datetime.fromisoformat(validation["interval_end"]))
    return versions + ([champion] if champion and champion not in versions else []), champion


def plan_scoring_step(settings: Settings, validation: dict | None, candidates: Sequence[dict | None],
                      device: str) -> list[int]:
    """The versions (candidates and champion) that score the test rows on ``device``: a GPU kind
    on the gpu queue, the others on the CPU workers."""
    if validation is None:
        raise Skip("the snapshot was not validated (an earlier task failed): nothing to evaluate")
    with db.transaction(settings) as cur:
        versions, _ = _models_to_evaluate(cur, validation, candidates)
        return [v for v in versions if device_of(registry.model_kind(cur, v)) == device]


def score_test_step(settings: Settings, run_id: str, validation: dict, version: int) -> dict:
    """One model's probabilities on the frozen test rows, stored for ``evaluate``."""
    from tasks.evaluate import score_test_rows

    _, _, test = load_splits(validation["clean_path"])
    with db.transaction(settings) as cur:
        row, directory = registry.fetch_artifact(cur, settings, version)
    scores = score_test_rows(registry.load_classifier(row["kind"], directory), test["text"].tolist(),
                             validation["labels"])
    path = settings.run_dir(run_id) / "test_scores" / f"v{version}.npy"
    buffer = io.BytesIO()
    np.save(buffer, scores.probabilities, allow_pickle=False)
    storage.ensure_parent(path).write_bytes(buffer.getvalue())
    log.info("model version %d scored %d test rows (%.1f ms per 1000)", version, len(test),
             scores.latency_ms_per_1000)
    return {"version": version, "kind": scores.kind, "path": str(path), "temperature": scores.temperature,
            "latency_ms_per_1000": scores.latency_ms_per_1000, "test_fingerprint": _test_fingerprint(test)}


def _stored_scores(scored: dict, test_fingerprint: str):
    from tasks.evaluate import ScoredTestRows

    if scored["test_fingerprint"] != test_fingerprint:
        raise RegistryError(f"the scores of model version {scored['version']} are for other test rows")
    with storage.upath(scored["path"]).open("rb") as fh:
        probabilities = np.load(io.BytesIO(fh.read()), allow_pickle=False)
    return ScoredTestRows(scored["kind"], probabilities, scored["latency_ms_per_1000"], scored.get("temperature"))


def evaluate_step(
    settings: Settings,
    run_id: str,
    validation: dict | None,
    candidates: Sequence[dict | None],
    options: RunOptions | None = None,
    scored: Sequence[dict | None] = (),
) -> dict:
    """Every candidate and the champion on the same frozen test rows. ``scored``: models already
    scored by ``score_test_step`` (on their own device); the others are scored here."""
    from tasks.evaluate import evaluate_all
    from tasks.report import write_report

    if validation is None:
        raise Skip("the snapshot was not validated (an earlier task failed): nothing to evaluate")
    options = options or RunOptions()
    _, _, test = load_splits(validation["clean_path"])
    test_fingerprint = _test_fingerprint(test)
    labels = validation["labels"]
    precomputed = {s["version"]: s for s in scored if s}
    models, rows = {}, {}
    with db.transaction(settings) as cur:
        versions, champion = _models_to_evaluate(cur, validation, candidates)
        for version in versions:
            row = registry.model_row(cur, version)
            if version in precomputed:
                model = _stored_scores(precomputed[version], test_fingerprint)
            elif device_of(row["kind"]) == "gpu" and scored:
                raise RegistryError(f"model version {version} ({row['kind']}) was not scored on the "
                                    "gpu queue (its score_gpu task failed?)")
            else:
                row, directory = registry.fetch_artifact(cur, settings, version)
                model = registry.load_classifier(row["kind"], directory)
            name = f"v{version} {row['kind']}"
            models[name], rows[name] = model, row
    champion_name = next((n for n, r in rows.items() if r["version"] == champion), None)
    compared_rows, other_schemes = rows_unseen_by_every_model(
        test, validation["fingerprint"].get("split_scheme"), rows)
    if other_schemes:
        log.warning("trained under another split scheme: %s; comparisons use the %d of %d test rows "
                    "none of them saw", ", ".join(other_schemes), len(compared_rows or []), len(test))
    report = evaluate_all(
        models, test["text"].tolist(), test["label"].tolist(), labels, champion_name,
        groups=split_key_groups(test, validation["fingerprint"].get("split_scheme")),
        size_bytes={n: r["size_bytes"] for n, r in rows.items()},
        train_seconds={n: r["train_seconds"] for n, r in rows.items()},
        peak_memory_bytes={n: r["peak_memory_bytes"] for n, r in rows.items()},
        n_resamples=settings.promotion.bootstrap_resamples,
        seed=settings.promotion.seed,
        comparison_rows=compared_rows,
    )
    comparisons = {c.challenger: c for c in report.comparisons}
    with db.transaction(settings) as cur:
        for name, row in rows.items():
            evaluation = report.evaluation(name).to_dict()
            evaluation.pop("probabilities", None)
            db.upsert_evaluation(cur, {
                "run_id": run_id, "model_version": row["version"],
                "role": "champion" if name == champion_name else "candidate",
                "test_rows": len(test), "test_fingerprint": test_fingerprint,
                "metrics": evaluation,
                "comparison": comparisons[name].summary() if name in comparisons else None,
            })
    curve = (
        _learning_curve(settings, run_id, validation, options)
        if options.learning_curve else None
    )
    run_dir = settings.run_dir(run_id)
    storage.write_text(run_dir / "evaluation.json", json.dumps(report.to_dict()))
    local_report = settings.scratch_dir(run_id) / "report"
    page = write_report(
        local_report, report, title=f"textclf run {run_id}", learning_curve=curve,
        extra={"test rows": len(test), "test fingerprint": test_fingerprint,
               "data fingerprint": validation["fingerprint"],
               **({"trained under another split scheme": ", ".join(other_schemes),
                   "test rows the comparisons use (unseen by every model)": len(compared_rows or [])}
                  if other_schemes else {}),
               # How each model learned, where its kind says (the TF-IDF solver: exact or sgd).
               **{f"{name} solver": m.solver for name, m in models.items() if getattr(m, "solver", None)}},
    )
    storage.upload_tree(local_report, run_dir / "report")
    for ev in report.evaluations:
        log.info("%s: macro-F1 %.4f accuracy %.4f", ev.name, ev.macro_f1, ev.accuracy)
    return {
        "evaluation_path": str(run_dir / "evaluation.json"),
        "report": str(run_dir / "report" / page.name),
        "versions": {name: row["version"] for name, row in rows.items()},
        "champion": champion,
        "leaderboard": sorted(
            ({"name": ev.name, "macro_f1": ev.macro_f1} for ev in report.evaluations),
            key=lambda e: -e["macro_f1"],
        ),
    }


def split_key_groups(test, scheme: str | None) -> list[str] | None:
    """Each test row's split key under the snapshot's scheme: the unit the bootstrap resamples
    (copies and near-copies of one text share a key, and so a split). None for a v1 snapshot,
    whose split was the row id: every row its own unit."""
    options = scheme_options(scheme)
    if options is None:
        return None
    return [split_key_text(text, options) for text in test["text"].tolist()]


def rows_unseen_by_every_model(test, scheme: str | None, models: Mapping[str, Mapping[str, Any]]
                               ) -> tuple[list[int] | None, list[str]]:
    """The test rows (positions) that champion and challengers can fairly be compared on.

    A model trained under another split scheme (the champion of a deployment whose [split]
    options or code changed) saw some of today's test rows in its training or validation split.
    The comparisons then keep only the rows that were test rows under every scheme involved:
    rows none of the models learned from. Returns (None, []) when every model shares the run's
    scheme, else (positions, the models named with their scheme); a scheme this code does not
    know leaves no row, so no challenger can be judged better than that model.
    """
    texts, ids = test["text"].tolist(), test["id"].tolist()
    keep = [True] * len(texts)
    others = []
    for name, row in models.items():
        fingerprint = row.get("data_fingerprint")
        if not fingerprint:
            continue  # registered without a data fingerprint: nothing is known of its rows
        theirs = fingerprint.get("split_scheme")  # absent: a v1 snapshot
        if theirs == scheme:
            continue
        others.append(f"{name} ({theirs or SCHEME_V1})")
        try:
            unseen = [split_under_scheme(theirs, text, row_id) == "test"
                      for text, row_id in zip(texts, ids, strict=True)]
        except ValueError:
            unseen = [False] * len(texts)
        keep = [a and b for a, b in zip(keep, unseen, strict=True)]
    if not others:
        return None, []
    return [position for position, kept in enumerate(keep) if kept], others


def _test_fingerprint(test) -> str:
    import hashlib

    digest = hashlib.sha256()
    for row_id in sorted(test["id"].tolist()):
        digest.update(f"{row_id}\n".encode())
    return digest.hexdigest()


def _learning_curve(settings: Settings, run_id: str, validation: dict, options: RunOptions):
    """Every enabled kind that learns from data, at several training-set fractions."""
    from tasks.evaluate import evaluate_model
    from tasks.report import learning_curve

    train, val, test = load_splits(validation["clean_path"])
    labels = validation["labels"]
    kinds = [k for k in options.enabled(settings) if get_kind(k).learns_from_data]
    scratch = settings.scratch_dir(run_id) / "learning_curve"

    def train_and_score(kind_name: str, fraction: float):
        subset = train.sample(frac=fraction, random_state=0) if fraction < 1 else train
        kind = get_kind(kind_name)
        out = scratch / f"{kind_name}-{fraction}"
        started = time.perf_counter()
        kind.train(TrainingJob(train=subset, validation=val, labels=labels, output_dir=out,
                               checkpoint_dir=scratch / f"{kind_name}-{fraction}-checkpoints"),
                   options.config(settings, kind_name))
        seconds = time.perf_counter() - started
        ev = evaluate_model(kind_name, kind.load(out), test["text"].tolist(), test["label"].tolist(),
                            labels)
        return len(subset), ev.macro_f1, seconds

    return learning_curve(train_and_score, kinds)


def promote_step(
    settings: Settings,
    run_id: str,
    validation: dict,
    evaluation: dict,
    *,
    actor: str = "schedule",
    min_delta: float | None = None,
    dry_run: bool = False,
) -> dict:
    """Apply the promotion policy; records the decision and every reason either way.

    Idempotent per run: a retry (or a rerun of the same run id) returns the decision already
    taken. A historical run (its data interval ends before the current champion took effect)
    records its decision as "historical" and never changes the champion.
    """
    from dataclasses import replace

    from tasks.evaluate import EvaluationReport
    from tasks.policy import Candidate, JudgedNight, decide, night_budget

    interval_end = datetime.fromisoformat(validation["interval_end"])
    policy = settings.promotion if min_delta is None else replace(settings.promotion, min_delta=min_delta)
    for _ in range(3):
        with db.transaction(settings) as cur:
            taken = registry.run_decision(cur, run_id)
            champion = registry.champion_of(cur, interval_end)
            nights = registry.reign_nights(cur, interval_end)
        if taken is not None:
            log.info("run %s already decided: %s", run_id, taken["reasons"].get("summary"))
            return _promotion_result({**taken, "replayed": True})
        if champion != evaluation["champion"]:
            # Another run promoted since this run's evaluation: judge the candidates against the
            # champion in place now, on the same test rows.
            log.warning("champion changed since evaluation (was %s, now %s): evaluating again",
                        evaluation["champion"], champion)
            evaluation = evaluate_step(settings, run_id, validation, [
                {"version": v} for v in evaluation["versions"].values() if v != evaluation["champion"]
            ])
        report = EvaluationReport.from_dict(json.loads(storage.read_text(evaluation["evaluation_path"])))
        versions = evaluation["versions"]
        comparisons = {c.challenger: c for c in report.comparisons}
        candidates = [
            Candidate(version, report.evaluation(name), comparisons.get(name))
            for name, version in versions.items()
            if version != champion
        ]
        champion_eval = next((report.evaluation(n) for n, v in versions.items() if v == champion), None)
        # This night's share of the champion's lifetime budget (none for a historical run: it
        # never changes the champion, so its verdict is informative only).
        budget = (night_budget([JudgedNight(**n) for n in nights], interval_end, policy)
                  if champion is not None and nights is not None else None)
        decision = decide(candidates, champion, champion_eval, validation["status"] == "passed", policy,
                          budget)
        if dry_run and decision.budget:
            decision.budget["spent"] = False  # evaluate only: it cannot promote, so it spends nothing
        with db.transaction(settings) as cur:  # the decision, the history and the event: one commit
            outcome = registry.apply_run_decision(
                cur, run_id=run_id, interval_end=interval_end, expected_champion=champion,
                winner=decision.winner if decision.action == "promote" else None,
                summary=decision.summary, reasons=decision.to_dict(), actor=actor, dry_run=dry_run,
                judged_nights=nights,
            )
        if outcome is not None:
            log.info("%s", outcome["reasons"]["summary"])
            return _promotion_result(outcome)
    raise RuntimeError("the champion changed three times while this run was being judged; retry it")


def change_champion_step(settings: Settings, action: str, version: int | None, reason: str,
                         actor: str, run_id: str | None = None) -> dict:
    """A champion change by hand (the textclf_promote DAG, `textclf promote/rollback`): make
    ``version`` champion, or roll back to the previous one; recorded with actor and reason.

    Idempotent per ``run_id``: a retry after an earlier try committed returns that change
    (``replayed``) instead of repeating it (a second rollback would undo the first); if the
    champion was changed since by someone else, it repeats nothing and says so (Skip)."""
    if action not in ("promote", "rollback"):
        raise InputError(f"action must be 'promote' or 'rollback', not {action!r}")
    if not reason or not reason.strip():
        raise InputError("a reason is required: it goes into the audit trail")
    with db.transaction(settings) as cur:
        previous = registry.current_champion(cur)
        earlier = db.manual_decision(cur, run_id) if run_id else None
        if earlier is not None:
            if previous != earlier["champion_after"]:
                raise Skip(f"an earlier try of run {run_id} made model version {earlier['champion_after']} "
                           f"champion, and it was changed since (to {previous}): nothing repeated")
            log.info("run %s already made model version %s champion: not repeated", run_id, previous)
            return {"changed": earlier["champion_before"] != earlier["champion_after"], "champion": previous,
                    "previous": earlier["champion_before"], "action": action, "actor": actor,
                    "reason": reason, "replayed": True}
        if action == "rollback":
            version = registry.rollback(cur, settings, actor=actor, reason=reason, run_id=run_id)
            changed = True
        elif version is None:
            raise InputError("promote needs the model version to make champion")
        else:
            changed = registry.set_champion(cur, settings, version, reason=reason, actor=actor,
                                            decision="manual", run_id=run_id)
    log.info("%s: model version %s is champion (was %s), by %s: %s", action, version, previous, actor, reason)
    return {"changed": changed, "champion": version, "previous": previous, "action": action,
            "actor": actor, "reason": reason, "replayed": False}


def _promotion_result(decision: dict) -> dict:
    return {
        "decision": decision["decision"],
        "promoted": decision["decision"] == "promoted",
        "champion": decision["champion_after"],
        "previous": decision["champion_before"],
        "summary": decision["reasons"].get("summary", ""),
        "replayed": decision.get("replayed", False),
    }


def plan_predictions_step(
    settings: Settings,
    run_id: str,
    validation: dict | None,
    *,
    rescore_all: bool = False,
) -> dict:
    """Which model scores which documents: the champion of this run scores the interval's new
    documents, or all of them when this run promoted it, split into id ranges of about
    ``prediction_partition_rows`` documents (one for small data), one mapped task each; a champion
    whose kind needs a GPU scores on the GPU queue.

    The champion of a run is the one its own promotion decision left, else (no decision:
    validation failed, nothing trained) the champion of its date (db.champion_of), so a rerun
    of any date writes the same rows with the same model version."""
    if validation is None:
        raise Skip("the snapshot was not extracted and validated (an earlier task failed)")
    start = datetime.fromisoformat(validation["interval_start"])
    end = datetime.fromisoformat(validation["interval_end"])
    with db.transaction(settings) as cur:
        decision = registry.run_decision(cur, run_id)
        champion = registry.run_champion(cur, run_id, end)
        if champion is None:
            raise Skip(f"there was no champion for data up to {end:%Y-%m-%d %H:%M %Z}, so nothing can be scored")
        kind = registry.model_kind(cur, champion)
        promoted_here = bool(decision and decision["decision"] == "promoted")
        full = rescore_all or (promoted_here and settings.rescore_on_champion_change)
        scope_start = None if full else start
        wanted = max(1, settings.max_prediction_partitions)
        with db.reading_source(settings.documents_source, "documents_source"):
            db.check_timestamp_column(cur, settings.documents_source, "documents_source")
            db.check_document_id_column(cur, settings.documents_source, "documents_source")
            documents, _ = db.document_id_bounds(cur, settings.documents_source, scope_start, end, 1)
            parts = max(1, min(wanted, math.ceil(documents / max(1, settings.prediction_partition_rows))))
            _, cuts = db.document_id_bounds(cur, settings.documents_source, scope_start, end, parts)
    bounds = [None, *cuts, None]
    partitions = [
        {"index": i, "model_version": champion, "id_from": bounds[i], "id_to": bounds[i + 1],
         "start": scope_start.isoformat() if scope_start else None, "end": end.isoformat(),
         "full_rescore": full}
        for i in range(len(bounds) - 1)
    ]
    on_gpu = get_kind(kind).needs_gpu if kind in KINDS else False
    log.info("model version %d (%s) scores %d documents (%s) in %d partition(s)%s", champion, kind,
             documents, "full rescore" if full else "new documents", len(partitions),
             " on the GPU queue" if on_gpu else "")
    return {"model_version": champion, "documents": documents, "full_rescore": full,
            "cpu": [] if on_gpu else partitions, "gpu": partitions if on_gpu else []}


def predict_partition_step(
    settings: Settings, run_id: str, logical_date: datetime | None, partition: dict
) -> dict:
    """Score one id range; each chunk is its own transaction, so a retry converges."""
    from tasks.predict import predict_documents

    stats = predict_documents(
        settings, model_version=partition["model_version"], run_id=run_id, logical_date=logical_date,
        start=datetime.fromisoformat(partition["start"]) if partition["start"] else None,
        end=datetime.fromisoformat(partition["end"]),
        id_from=partition["id_from"], id_to=partition["id_to"],
    )
    log.info("partition %d (ids %s to %s): %d documents, %d rows written", partition["index"],
             partition["id_from"], partition["id_to"], stats.documents, stats.rows_written)
    return {**asdict(stats), "partition": partition["index"], "full_rescore": partition["full_rescore"]}


def predict_step(
    settings: Settings,
    run_id: str,
    logical_date: datetime | None,
    validation: dict | None,
    *,
    rescore_all: bool = False,
) -> dict:
    """Plan and score every partition here, one after the other (the CLI's path and the tests';
    the DAG maps the partitions onto tasks)."""
    plan = plan_predictions_step(settings, run_id, validation, rescore_all=rescore_all)
    results = [predict_partition_step(settings, run_id, logical_date, p) for p in plan["cpu"] + plan["gpu"]]
    return summarize_predictions(results)


def summarize_predictions(results: Sequence[dict | None]) -> dict:
    done = [r for r in results if r]
    if not done:
        raise Skip("no partition was scored")
    return {"model_version": done[0]["model_version"], "documents": sum(r["documents"] for r in done),
            "rows_written": sum(r["rows_written"] for r in done), "chunks": sum(r["chunks"] for r in done),
            "partitions": len(done), "full_rescore": done[0]["full_rescore"]}
