"""The night's figures as metrics: names and values from each step's result. Airflow's own
stats client sends them (StatsD or OpenTelemetry, as `[metrics]` in airflow.cfg says), under
Airflow's prefix (default ``airflow.``). Pure: the DAG hands the list to Airflow.

Names (all gauges unless marked; durations in milliseconds):
  textclf.extract.snapshot_rows, textclf.extract.new_rows
  textclf.validate.quarantined_rows, textclf.validate.passed (1 or 0)
  textclf.train.<kind>.seconds (timing)
  textclf.evaluate.<kind>.macro_f1 (the best candidate of each kind), textclf.evaluate.champion.macro_f1
  textclf.promote.promoted (1 or 0)
  textclf.predict.rows_written, textclf.predict.documents
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PREFIX = "textclf"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class Metric:
    name: str
    type: Literal["gauge", "timing"]
    value: float


def _name(*parts: str) -> str:
    return ".".join([PREFIX, *(_UNSAFE.sub("_", part) for part in parts)])


def step_metrics(step: str, result: Mapping[str, Any] | None) -> list[Metric]:
    """The metrics one step's result stands for (none for a step without figures)."""
    if not result:
        return []
    if step == "extract":
        return [Metric(_name("extract", "snapshot_rows"), "gauge", result["snapshot_rows"]),
                Metric(_name("extract", "new_rows"), "gauge", result["new_rows"])]
    if step == "validate":
        return [Metric(_name("validate", "quarantined_rows"), "gauge", result["quarantined_rows"]),
                Metric(_name("validate", "passed"), "gauge", 1.0 if result["status"] == "passed" else 0.0)]
    if step == "train":
        return [Metric(_name("train", result["kind"], "seconds"), "timing", 1000.0 * result["train_seconds"])]
    if step == "evaluate":
        best: dict[str, float] = {}
        champion = result.get("champion")
        metrics = []
        for entry in result["leaderboard"]:
            version, kind = entry["name"].split(" ", 1)
            if champion is not None and version == f"v{champion}":
                metrics.append(Metric(_name("evaluate", "champion", "macro_f1"), "gauge", entry["macro_f1"]))
            else:
                best[kind] = max(best.get(kind, 0.0), entry["macro_f1"])
        return metrics + [Metric(_name("evaluate", kind, "macro_f1"), "gauge", f1) for kind, f1 in sorted(best.items())]
    if step == "promote":
        return [Metric(_name("promote", "promoted"), "gauge", 1.0 if result["promoted"] else 0.0)]
    if step == "predict":
        return [Metric(_name("predict", "rows_written"), "gauge", result["rows_written"]),
                Metric(_name("predict", "documents"), "gauge", result["documents"])]
    raise ValueError(f"no metrics are defined for step {step!r}")
