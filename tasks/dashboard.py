"""What the registry page in the Airflow UI shows, computed here (no Airflow, no HTML): the
leaderboard, each night's macro-F1 per candidate kind as chart geometry (drawn as inline SVG by
the plugin's template: no script, no CDN), the champion timeline, the lifetime error budget the
current champion's reign has spent, and each run's validation outcome and promotion decision
rule by rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasks import db
from tasks.config import Settings
from tasks.policy import night_level

CHART_WIDTH, CHART_HEIGHT, MARGIN = 760, 260, 40
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def snapshot(settings: Settings, runs: int = 30) -> dict[str, Any]:
    with db.connect(settings) as conn, conn.cursor() as cur:
        models = db.leaderboard(cur)
        history = db.champion_history(cur)
        scores = db.nightly_scores(cur, runs * 2)
        summaries = db.run_summaries(cur, runs)
        champion = next((m for m in models if m["is_champion"]), None)
        budget = lifetime_budget(cur, settings)
    for model in models:  # an object-store URI may carry credentials: never show them
        model["artifact_uri"] = db.masked(model["artifact_uri"] or "")
    return {
        "champion": champion,
        "budget": budget,
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
        "verdicts": verdicts, "evaluated": row["evaluated"], "budget": reasons.get("budget"),
    }


def chart(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Chart geometry against the run's interval end, fitting a CHART_WIDTH x CHART_HEIGHT box:
    one polyline per kind through the best candidate of that kind each night, and, drawn
    apart, the champion after each night's decision (so a night that promoted shows the new
    champion's score, not the old one's), with the nights that promoted flagged."""
    if not scores:
        return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "series": [], "champion": None,
                "x_ticks": [], "y_ticks": []}
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

    colours = {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(sorted({s["kind"] for s in scores}))}
    series = []
    for kind, colour in colours.items():
        best: dict[datetime, dict[str, Any]] = {}
        for s in scores:
            if s["kind"] == kind and s["role"] == "candidate" and s["macro_f1"] is not None:
                current = best.get(s["interval_end"])
                if current is None or s["macro_f1"] > current["macro_f1"]:
                    best[s["interval_end"]] = s
        if not best:
            continue
        points = [{"x": round(x(t), 1), "y": round(y(p["macro_f1"]), 1), "macro_f1": p["macro_f1"],
                   "version": p["model_version"], "night": t.date().isoformat()} for t, p in sorted(best.items())]
        series.append({"kind": kind, "colour": colour, "points": points,
                       "path": " ".join(f"{p['x']},{p['y']}" for p in points)})
    champion_points = []
    for t in times:
        night = [s for s in scores if s["interval_end"] == t]
        before = next((s["model_version"] for s in night if s["role"] == "champion"), None)
        after = next((s["champion_after"] for s in night if s.get("champion_after") is not None), before)
        score = next((s for s in night if s["model_version"] == after and s["macro_f1"] is not None), None)
        if score is not None:
            champion_points.append({
                "x": round(x(t), 1), "y": round(y(score["macro_f1"]), 1), "macro_f1": score["macro_f1"],
                "version": after, "kind": score["kind"], "colour": colours[score["kind"]],
                "promoted": after != before, "night": t.date().isoformat()})
    champion = {"points": champion_points,
                "path": " ".join(f"{p['x']},{p['y']}" for p in champion_points)} if champion_points else None
    step = max(1, len(times) // 8)
    return {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "series": series, "champion": champion,
        "x_ticks": [{"x": round(x(t), 1), "label": t.date().isoformat()} for t in times[::step]],
        "y_ticks": [{"y": round(y(v), 1), "label": f"{v:.2f}"}
                    for v in [low + (high - low) * k / 4 for k in range(5)]],
        "plot": {"left": MARGIN, "top": MARGIN, "right": CHART_WIDTH - MARGIN, "bottom": CHART_HEIGHT - MARGIN},
    }


def lifetime_budget(cur, settings: Settings) -> dict[str, Any] | None:
    """How much of the current champion's lifetime error budget its reign has spent."""
    current = db.current_champion_row(cur)
    if current is None:
        return None
    policy = settings.promotion
    nights = db.reign_tested_nights(cur, current["model_version"], current["effective_from"])
    window = len(nights) // policy.lifetime_nights  # the window the next night falls in
    spent = sum(n["level"] for n in nights if (n["night"] - 1) // policy.lifetime_nights == window)
    return {"version": current["model_version"], "since": current["effective_from"], "nights": len(nights),
            "window": window + 1, "window_nights": policy.lifetime_nights, "spent": spent,
            "alpha": policy.alpha, "next_level": night_level(len(nights) + 1, policy)}


def run_was_evaluated(settings: Settings, run_id: str) -> bool:
    """Whether ``run_id`` is a run with evaluations (the only runs that have a report)."""
    with db.connect(settings) as conn, conn.cursor() as cur:
        return db.run_was_evaluated(cur, run_id)
