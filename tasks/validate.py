"""Great Expectations validation of the nightly training snapshot.

Pure: takes a snapshot DataFrame, returns a ValidationOutcome. Writing the outcome to
PostgreSQL (and deciding what to do with it) is the caller's job.

Two suites, kept as reviewable JSON next to the code and loaded at run time:

* ``labelled_rows.json``: row-level checks. Run over the whole snapshot with result format
  COMPLETE to find every failing row (identified by ``id``) for quarantine, and over the
  new rows, where the ``mostly`` thresholds decide whether the batch passes.
* ``labelled_batch.json``: batch-level checks on the new rows (row count, label drift,
  conflicting-label share, duplicate-text share).

Runtime values (label set, interval end, thresholds, the drift baseline) reach the suites
as suite parameters, so the JSON files stay static.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from tasks.config import ValidationThresholds
from tasks.extract import normalize_text
from tasks.normalize import blank_pattern

logging.getLogger("great_expectations").setLevel(logging.WARNING)

ROW_SUITE_FILE = "labelled_rows.json"
BATCH_SUITE_FILE = "labelled_batch.json"
SNAPSHOT_SUITE_FILE = "labelled_snapshot.json"
REQUIRED_COLUMNS = ("id", "text", "label", "labelled_at", "split", "is_new")
KL_DIVERGENCE = "expect_column_kl_divergence_to_be_less_than"
DOCS_SITE = "textclf"
PREVIEW_CHARS = 60

Status = Literal["passed", "failed", "no_new_data"]


@dataclass
class ValidationParams:
    label_set: list[str]
    interval_end: datetime  # exclusive end of the run's data interval; must be tz-aware
    thresholds: ValidationThresholds = field(default_factory=ValidationThresholds)  # [validation]
    min_text_length: int = 1
    allow_new_labels: bool = False
    # Labels kept out of a label set that is still being learned (too few rows): their rows are
    # quarantined with that reason and not judged again as part of the batch of new rows.
    set_aside_labels: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.interval_end.tzinfo is None:
            raise ValueError("interval_end must be timezone-aware")
        if not 0 <= self.min_text_length <= self.thresholds.max_text_length:
            raise ValueError("need 0 <= min_text_length <= max_text_length")


@dataclass
class QuarantinedRow:
    row_id: Any
    expectation: str
    reason: str
    column: str
    value: Any


@dataclass
class ValidationOutcome:
    status: Status
    new_rows: int
    snapshot_rows: int
    quarantined: list[QuarantinedRow]  # one entry per failed row expectation, so an id may repeat
    clean: pd.DataFrame
    failures: list[str]
    results: dict[str, dict[str, Any]]
    new_labels: list[str] = field(default_factory=list)
    data_docs_path: Path | None = None

    @property
    def quarantined_ids(self) -> set[Any]:
        return {row.row_id for row in self.quarantined}


def load_suite(path: Path | str) -> gx.ExpectationSuite:
    with open(path, encoding="utf-8") as f:
        return gx.ExpectationSuite(**json.load(f))


def validate_snapshot(
    snapshot: pd.DataFrame,
    params: ValidationParams,
    suites_dir: Path,
    data_docs_dir: Path | None = None,
) -> ValidationOutcome:
    """Quarantine failing rows of the whole snapshot and judge the batch of new rows.

    status is "failed" when any expectation of either suite fails on the new rows (after
    `mostly`), "no_new_data" when no row is new. `quarantined` holds one entry per failed row
    expectation. With allow_new_labels, labels outside label_set anywhere in the snapshot are
    accepted and listed in `new_labels`.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in snapshot.columns]
    if missing:
        raise ValueError(f"snapshot is missing columns: {missing}")

    given = snapshot
    if "weight" not in snapshot.columns:  # a source without weights: every label counts once
        snapshot = snapshot.assign(weight=np.nan)
    row_suite = load_suite(Path(suites_dir) / ROW_SUITE_FILE)
    batch_suite = load_suite(Path(suites_dir) / BATCH_SUITE_FILE)

    new_labels = (
        _unknown_labels(snapshot["label"], params.label_set) if params.allow_new_labels else []
    )
    expectation_params: dict[str, Any] = {
        "label_set": list(params.label_set) + new_labels,
        "interval_end": pd.Timestamp(params.interval_end),
        "min_text_length": params.min_text_length,
        "blank_pattern": blank_pattern(),
        **asdict(params.thresholds),
    }

    context = _ephemeral_context(data_docs_dir)
    source = context.data_sources.add_pandas("training_snapshot")

    # Whole snapshot: which rows to quarantine. `mostly` is irrelevant here, GX reports every
    # unexpected row whether or not the expectation as a whole succeeded.
    snapshot_batch = (
        source.add_dataframe_asset("snapshot")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": snapshot})
    )
    _require_parameters(row_suite, expectation_params)
    snapshot_result = snapshot_batch.validate(
        row_suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]},
        expectation_parameters=expectation_params,
    )
    quarantined = _quarantine(snapshot_result)
    rejected = rows_with_ids(snapshot["id"], {q.row_id for q in quarantined}).to_numpy()
    clean = given[~rejected]
    results = _quarantine_summary(row_suite, quarantined)

    is_new = snapshot["is_new"].fillna(False).astype(bool).to_numpy()
    outcome = ValidationOutcome(
        status="no_new_data",
        new_rows=int(is_new.sum()),
        snapshot_rows=len(snapshot),
        quarantined=quarantined,
        clean=clean,
        failures=[],
        results=results,
        new_labels=new_labels,
    )
    if outcome.new_rows == 0:
        return outcome

    # New rows: judge the batch with both suites, less the rows set aside while the label set
    # is learned (quarantined once, with their own reason).
    is_new = is_new & ~snapshot["label"].isin(params.set_aside_labels).to_numpy()
    if not is_new.any():
        outcome.failures.append("every new row carries a label set aside while the label set is learned")
        outcome.status = "failed"
        return outcome
    new = snapshot[is_new].assign(**_text_indicators(snapshot, is_new))
    partition = _label_partition(snapshot.loc[~is_new & ~rejected, "label"], new["label"])
    if partition is None:
        batch_suite.expectations = [
            e for e in batch_suite.expectations if e.expectation_type != KL_DIVERGENCE
        ]
        results[_key(batch_suite.name, KL_DIVERGENCE, "label")] = {
            "suite": batch_suite.name,
            "expectation": KL_DIVERGENCE,
            "column": "label",
            "success": None,
            "note": "skipped: no older rows to compare the label distribution with",
        }
    else:
        expectation_params["label_partition"] = partition
    _require_parameters(batch_suite, expectation_params)

    checkpoint_result = _run_checkpoint(
        context,
        source.add_dataframe_asset("new_rows").add_batch_definition_whole_dataframe("whole"),
        suites=[row_suite, batch_suite],
        dataframe=new,
        expectation_params=expectation_params,
        run_name=f"snapshot-{pd.Timestamp(params.interval_end).tz_convert('UTC'):%Y%m%dT%H%M%SZ}",
        build_docs=data_docs_dir is not None,
    )
    for suite_result in checkpoint_result.run_results.values():
        for r in suite_result.results:
            summary = _summary(suite_result.suite_name, r)
            key = _key(summary["suite"], summary["expectation"], summary["column"])
            results[key] = {**results.get(key, {}), **summary}
            if not r.success:
                outcome.failures.append(_failure_message(r))

    outcome.status = "passed" if checkpoint_result.success else "failed"

    # The clean training rows as a whole: enough labels to learn from.
    snapshot_suite = load_suite(Path(suites_dir) / SNAPSHOT_SUITE_FILE)
    training = clean[clean["split"] == "train"][["id", "label"]]
    training_result = (
        source.add_dataframe_asset("clean_training_rows").add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": training})
        .validate(snapshot_suite, result_format={"result_format": "SUMMARY"})
    )
    for r in training_result.results:
        summary = _summary(snapshot_suite.name, r)
        results[_key(summary["suite"], summary["expectation"], summary["column"])] = summary
        if not r.success:
            outcome.failures.append(_failure_message(r) + " among the clean training rows of the snapshot")
            outcome.status = "failed"
    if data_docs_dir is not None:
        escape_data_in_docs(Path(data_docs_dir), snapshot)
        index = Path(data_docs_dir).resolve() / "index.html"
        outcome.data_docs_path = index if index.is_file() else None
    return outcome


# --- Great Expectations plumbing ------------------------------------------------------------


def _ephemeral_context(data_docs_dir: Path | None):
    # An explicit config instead of plain get_context(mode="ephemeral"): the default one
    # registers a "local_site" docs site under a fresh temp directory, and any docs build
    # without site_names would write there.
    sites = {}
    if data_docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(Path(data_docs_dir).resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            # Suite pages render the raw configs, and the KL-divergence renderer crashes on
            # an unsubstituted {"$PARAMETER": ...} partition. Validation pages show each
            # expectation with its runtime values anyway.
            "site_section_builders": {"expectations": "0", "profiling": "0"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_checkpoint(
    context, batch_definition, suites, dataframe, expectation_params, run_name, build_docs
):
    definitions = [
        context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"new_rows_{suite.name}",
                data=batch_definition,
                suite=context.suites.add(suite),
            )
        )
        for suite in suites
    ]
    actions: list[Any] = (
        [UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if build_docs else []
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="new_rows",
            validation_definitions=definitions,
            actions=actions,
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": ["id"],
                "partial_unexpected_count": 10,
            },
        )
    )
    return checkpoint.run(
        batch_parameters={"dataframe": dataframe},
        expectation_parameters=expectation_params,
        run_id=RunIdentifier(run_name=run_name),
    )


def _require_parameters(suite: gx.ExpectationSuite, expectation_params: dict[str, Any]) -> None:
    missing = sorted(set(suite.suite_parameter_options) - set(expectation_params))
    if missing:
        raise ValueError(f"suite {suite.name!r} needs parameters that were not supplied: {missing}")


def _error_message(r) -> str | None:
    info = r.exception_info or {}
    # Either one ExceptionInfo, or a dict of them keyed by the metric that failed.
    for candidate in [info, *info.values()]:
        if isinstance(candidate, dict) and candidate.get("raised_exception"):
            return str(candidate.get("exception_message"))
    return None


# --- quarantine -----------------------------------------------------------------------------


def _quarantine(suite_result) -> list[QuarantinedRow]:
    quarantined = []
    for r in suite_result.results:
        config = r.expectation_config
        error = _error_message(r)
        if error:
            raise RuntimeError(f"{config.type} could not be evaluated on the snapshot: {error}")
        column = config.kwargs.get("column")
        for index in r.result.get("unexpected_index_list") or []:
            value = _plain(index.get(column))
            detail = _row_detail(config.type, value, config.kwargs)
            quarantined.append(
                QuarantinedRow(
                    row_id=_plain(index.get("id")),
                    expectation=config.type,
                    reason=f"{config.type} failed on field '{column}': {detail}",
                    column=column,
                    value=value,
                )
            )
    return quarantined


def _row_detail(expectation: str, value: Any, kwargs: dict[str, Any]) -> str:
    match expectation:
        case "expect_column_values_to_not_be_null":
            return "value is missing"
        case "expect_column_values_to_not_match_regex" if kwargs.get("regex") == blank_pattern():
            return (f"{_preview(value)} is blank: empty, or only whitespace and characters that show nothing "
                    "(tasks.normalize.is_blank)")
        case "expect_column_values_to_not_match_regex":
            return f"{_preview(value)} matches the forbidden pattern {kwargs['regex']!r}"
        case "expect_column_value_lengths_to_be_between":
            bounds = f"[{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
            return f"length {len(value)} is outside {bounds} ({_preview(value)})"
        case "expect_column_values_to_be_in_set":
            return f"{_preview(value)} is not in the label set {_preview_list(kwargs['value_set'])}"
        case "expect_column_values_to_be_unique":
            return f"{_preview(value)} occurs more than once"
        case "expect_column_values_to_be_between":
            return f"{_preview(value)} is not {_range_text(kwargs)}"
        case _:
            return f"unexpected value {_preview(value)}"


def _range_text(kwargs: dict[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    parts = []
    if low is not None:
        parts.append(f"{'after' if kwargs.get('strict_min') else 'at or after'} {_preview(low)}")
    if high is not None:
        parts.append(f"{'before' if kwargs.get('strict_max') else 'at or before'} {_preview(high)}")
    return " and ".join(parts)


def rows_with_ids(ids: pd.Series, wanted: set[Any]) -> pd.Series:
    rejected = ids.isin([i for i in wanted if i is not None])
    if None in wanted:
        rejected |= ids.isna()
    return rejected


def unknown_label_failures(new_labels: pd.Series, label_set: list[str], origin: str) -> list[str]:
    """One line per label of the new rows outside a stored or configured label set: the label,
    its rows, the nearest known label, and how to allow it. A new label is a decision for
    people, so the batch fails; the line says what to decide."""
    import difflib

    known = [str(k) for k in label_set]
    counts = Counter(label for label in new_labels.dropna() if label not in set(label_set))
    lines = []
    for label, rows in sorted(counts.items(), key=lambda item: str(item[0])):
        nearest = difflib.get_close_matches(str(label), known, n=1, cutoff=0.0)
        lines.append(
            f"label {label!r} on {rows} new row{'s' if rows != 1 else ''} is not in the {origin} label set "
            f"({', '.join(map(repr, known))})"
            + (f"; nearest known label: {nearest[0]!r}" if nearest else "")
            + ". If it is a typo, correct the source rows; if it is a new class, set allow_new_labels = "
            "true in textclf.toml or add it to `labels`; then re-run this date")
    return lines


def _unknown_labels(labels: pd.Series, label_set: list[str]) -> list[str]:
    known = set(label_set)
    return sorted({label for label in labels.dropna().unique() if label not in known}, key=str)


# --- derived batch inputs -------------------------------------------------------------------


def _text_indicators(snapshot: pd.DataFrame, is_new: np.ndarray) -> dict[str, np.ndarray]:
    """0/1 indicators for the new rows, for the share expectations of the batch suite.

    Texts are compared normalised (lowercase, whitespace collapsed). Null and blank texts
    never count: the row suite already reports them.
    """
    text = snapshot["text"].reset_index(drop=True)
    norm = text.map(lambda t: normalize_text(t) if isinstance(t, str) else None).astype("string")
    norm = norm.where(norm.str.len() > 0)

    # Older rows first, so a new row is a duplicate when its text is already known.
    order = np.argsort(is_new, kind="stable")
    in_order = norm.iloc[order]
    is_duplicate = (in_order.duplicated() & in_order.notna()).sort_index()

    labels = snapshot["label"].reset_index(drop=True)
    labelled = pd.DataFrame({"norm": norm, "label": labels}).dropna()
    labels_per_text = labelled.groupby("norm")["label"].nunique()
    is_conflicting = norm.map(labels_per_text).fillna(0) > 1

    return {
        "is_duplicate": is_duplicate.to_numpy(dtype=float)[is_new],
        "is_conflicting": is_conflicting.to_numpy(dtype=float)[is_new],
    }


def _label_partition(baseline: pd.Series, new_labels: pd.Series) -> dict[str, list] | None:
    """Categorical partition object for the KL-divergence expectation, or None without a baseline.

    Labels the baseline has never seen (new or unknown ones) are given their observed share,
    so they contribute nothing to the divergence: drift is measured over the labels the
    baseline knows, and unknown labels are the label-set expectation's business. This also
    keeps the divergence finite.
    """
    base = baseline.dropna().value_counts(normalize=True)
    if base.empty:
        return None
    observed = new_labels.dropna().value_counts(normalize=True)
    unseen = observed[~observed.index.isin(base.index)]
    weights = pd.concat([base * (1.0 - unseen.sum()), unseen])
    return {"values": [_plain(v) for v in weights.index], "weights": [float(w) for w in weights]}


# --- reporting ------------------------------------------------------------------------------


def _key(suite: str, expectation: str, column: str | None) -> str:
    return f"{suite}.{expectation}" + (f".{column}" if column else "")


def _quarantine_summary(
    suite: gx.ExpectationSuite, quarantined: list[QuarantinedRow]
) -> dict[str, dict[str, Any]]:
    counts: Counter[tuple[str, str | None]] = Counter((q.expectation, q.column) for q in quarantined)
    results = {}
    for expectation in suite.expectations:
        name, column = expectation.expectation_type, getattr(expectation, "column", None)
        results[_key(suite.name, name, column)] = {
            "suite": suite.name,
            "expectation": name,
            "column": column,
            "success": None,  # set from the new-rows run, if there is one
            "quarantined_rows": counts[(name, column)],
        }
    return results


def _summary(suite: str, r) -> dict[str, Any]:
    result = r.result or {}
    summary = {
        "suite": suite,
        "expectation": r.expectation_config.type,
        "column": r.expectation_config.kwargs.get("column"),
        "success": bool(r.success),
        "observed_value": _plain(result.get("observed_value")),
        "element_count": result.get("element_count"),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": _plain(result.get("unexpected_percent")),
    }
    error = _error_message(r)
    if error:
        summary["error"] = error
    return summary


def _failure_message(r) -> str:
    config = r.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column")
    head = f"{config.type} failed" + (f" on field '{column}'" if column else "")
    error = _error_message(r)
    if error:
        return f"{head}: the expectation raised an error: {error}"

    result = r.result or {}
    if "unexpected_percent" in result:
        mostly = kwargs.get("mostly", 1.0)
        sample_ids = [_plain(i["id"]) for i in result.get("partial_unexpected_index_list") or []]
        values = [_preview(c["value"]) for c in result.get("partial_unexpected_counts") or []]
        percent = result.get("unexpected_percent") or 0.0
        return (
            f"{head}: observed {percent:.1f}% unexpected "
            f"({result['unexpected_count']} of {result['element_count']} new rows), "
            f"at most {100 * (1 - mostly):.1f}% allowed (mostly={mostly}); "
            f"unexpected values {', '.join(values[:5])}; sample ids {sample_ids[:10]}"
        )

    observed = result.get("observed_value")
    if config.type == KL_DIVERGENCE:
        shown = "infinite" if observed is None else f"{observed:.4f}"
        partition = (result.get("details") or {}).get("observed_partition", {})
        shares = zip(partition.get("values", []), partition.get("weights", []), strict=True)
        top = ", ".join(f"{k}: {v:.2f}" for k, v in sorted(shares, key=lambda kv: -kv[1])[:5])
        return (
            f"{head}: observed KL divergence {shown}, expected at most {kwargs['threshold']}; "
            f"new-row label shares {top}"
        )
    return f"{head}: observed value {_format_number(observed)}, expected {_bounds_text(kwargs)}"


def _bounds_text(kwargs: dict[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}"


def _format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(_plain(value))


def _plain(value: Any) -> Any:
    """Plain, JSON-friendly Python value (numpy scalars, NaN/NaT -> None, Timestamp -> datetime)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _preview(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return repr(value[:PREVIEW_CHARS]) + f"... ({len(value)} chars)"
    return repr(_plain(value))


def _preview_list(values: list[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f", ... ({len(values)} labels)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def quarantine_entries(
    snapshot: pd.DataFrame, outcome: ValidationOutcome, source: str, run_id: str, *, no_id: str
) -> tuple[list[dict[str, Any]], int]:
    """The textclf.quarantine rows for an outcome, and how many snapshot rows they hold.

    Every version of a quarantined id is recorded (a view can repeat ids, and NULL ids, written
    as ``no_id``, are all "the same"), so each stays out until it changes or is released."""
    held = snapshot[rows_with_ids(snapshot["id"], outcome.quarantined_ids).to_numpy()]
    versions: dict[Any, list[tuple[str | None, dict]]] = {}
    for row in held.to_dict("records"):
        row_id = None if pd.isna(row["id"]) else row["id"]
        raw = json.loads(json.dumps(
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()},
            default=str,
        ))
        versions.setdefault(row_id, []).append((row.get("row_hash"), raw))
    entries = [
        {
            "stage": "validation", "source": source,
            "source_row": no_id if q.row_id is None else q.row_id,
            "field": q.column, "reason": q.reason, "expectation": q.expectation,
            "raw": raw, "run_id": run_id, "row_hash": row_hash,
        }
        for q in outcome.quarantined
        for row_hash, raw in versions.get(q.row_id) or [(None, {"id": q.row_id})]
    ]
    return entries, len(held)


_MARKUP = ("<", ">")


def escape_data_in_docs(docs_dir: Path, snapshot: pd.DataFrame) -> int:
    """GX 1.x writes unexpected values into Data Docs HTML unescaped, so a label such as
    ``</script><script>...`` would run in whoever opens the page. Every text or label of the
    snapshot that holds markup is replaced, where it appears verbatim, by its HTML-escaped form;
    returns how many replacements were made."""
    import html

    values = {v for column in ("text", "label") if column in snapshot.columns
              for v in snapshot[column].dropna().astype(str) if any(m in v for m in _MARKUP)}
    if not values:
        return 0
    replaced = 0
    for page in Path(docs_dir).rglob("*.html"):
        content = page.read_text(encoding="utf-8")
        for value in sorted(values, key=len, reverse=True):  # longest first: no partial overlap
            if value in content:
                replaced += content.count(value)
                content = content.replace(value, html.escape(value))
        page.write_text(content, encoding="utf-8")
    return replaced
