"""What the registry page in the Airflow UI shows, computed here (no Airflow, no HTML): the
leaderboard, each night's macro-F1 per candidate kind as chart geometry (drawn as inline SVG by
the plugin's template: no script, no CDN), the champion timeline, and each run's validation
outcome and promotion decision rule by rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks import db
from tasks.config import Settings

CHART_WIDTH, CHART_HEIGHT, MARGIN = 760, 260, 40
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def snapshot(settings: Settings, runs: int = 30) -> dict[str, Any]:
    with db.connect(settings) as conn, conn.cursor() as cur:
        models = db.leaderboard(cur)
        history = db.champion_history(cur)
        scores = db.nightly_scores(cur, runs * 2)
        summaries = db.run_summaries(cur, runs)
    for model in models:  # an object-store URI may carry credentials: never show them
        model["artifact_uri"] = db.masked(model["artifact_uri"] or "")
    champion = next((m for m in models if m["is_champion"]), None)
    return {
        "champion": champion,
        "models": models,
        "history": history,
        "runs": [run_view(r) for r in summaries],
        "chart": chart(scores),
    }


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """One run: validation outcome, and the decision with each challenger's rules."""
    reasons = row.get("reasons") or {}
    verdicts = [
        {"version": v["version"], "kind": v["kind"], "macro_f1": v["macro_f1"], "qualifies": v["qualifies"],
         "rules": [{"rule": r["rule"], "passed": r["passed"], "detail": r["detail"]} for r in v.get("rules", [])]}
        for v in reasons.get("verdicts", [])
    ]
    return {
        "run_id": row["run_id"], "interval_start": row["interval_start"], "interval_end": row["interval_end"],
        "validation": row["status"], "new_rows": row["new_rows"], "snapshot_rows": row["snapshot_rows"],
        "quarantined_rows": row["quarantined_rows"], "failures": row["failures"] or [],
        "decision": row["decision"], "summary": reasons.get("summary"),
        "champion_before": row["champion_before"], "champion_after": row["champion_after"],
        "verdicts": verdicts, "evaluated": row["evaluated"],
    }


def chart(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Polylines (one per kind) of test macro-F1 against the run's interval end; points where
    the model was the champion are flagged. Coordinates fit a CHART_WIDTH x CHART_HEIGHT box."""
    if not scores:
        return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "series": [], "x_ticks": [], "y_ticks": []}
    times = sorted({s["interval_end"] for s in scores})
    values = [s["macro_f1"] for s in scores if s["macro_f1"] is not None]
    low = max(0.0, min(values) - 0.02)
    high = min(1.0, max(values) + 0.02)
    if high - low < 0.05:
        low, high = max(0.0, low - 0.025), min(1.0, high + 0.025)
    plot_w, plot_h = CHART_WIDTH - 2 * MARGIN, CHART_HEIGHT - 2 * MARGIN

    def x(t: datetime) -> float:
        return MARGIN + (plot_w * times.index(t) / (len(times) - 1) if len(times) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return MARGIN + plot_h * (1 - (v - low) / (high - low))

    series = []
    for i, kind in enumerate(sorted({s["kind"] for s in scores})):
        best: dict[datetime, dict[str, Any]] = {}
        for s in scores:  # one point per night and kind: the champion's if it is of this kind, else the best
            if s["kind"] != kind or s["macro_f1"] is None:
                continue
            current = best.get(s["interval_end"])
            key = (s["role"] == "champion", s["macro_f1"])
            if current is None or key > (current["role"] == "champion", current["macro_f1"]):
                best[s["interval_end"]] = s
        points = [{"x": round(x(t), 1), "y": round(y(p["macro_f1"]), 1), "macro_f1": p["macro_f1"],
                   "version": p["model_version"], "champion": p["role"] == "champion",
                   "night": t.date().isoformat()} for t, p in sorted(best.items())]
        series.append({"kind": kind, "colour": PALETTE[i % len(PALETTE)], "points": points,
                       "path": " ".join(f"{p['x']},{p['y']}" for p in points)})
    step = max(1, len(times) // 8)
    return {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "series": series,
        "x_ticks": [{"x": round(x(t), 1), "label": t.date().isoformat()} for t in times[::step]],
        "y_ticks": [{"y": round(y(v), 1), "label": f"{v:.2f}"}
                    for v in [low + (high - low) * k / 4 for k in range(5)]],
        "plot": {"left": MARGIN, "top": MARGIN, "right": CHART_WIDTH - MARGIN, "bottom": CHART_HEIGHT - MARGIN},
    }


def run_was_evaluated(settings: Settings, run_id: str) -> bool:
    """Whether ``run_id`` is a run with evaluations (the only runs that have a report)."""
    with db.connect(settings) as conn, conn.cursor() as cur:
        return db.run_was_evaluated(cur, run_id)
