"""The registry page's chart geometry, computed without a database: per kind the best candidate
of each night, and apart from them the champion after each night's decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.dashboard import chart

NIGHT = datetime(2026, 11, 20, 2, tzinfo=UTC)


def score(night: int, version: int, kind: str, role: str, macro_f1: float, champion_after: int | None):
    return {"run_id": f"n{night}", "interval_end": NIGHT + timedelta(days=night), "model_version": version,
            "kind": kind, "role": role, "macro_f1": macro_f1, "champion_after": champion_after}


def test_a_night_that_promoted_draws_the_new_champions_score():
    scores = [
        score(0, 1, "tfidf", "candidate", 0.7368, 1),  # the first champion
        score(1, 1, "tfidf", "champion", 0.7368, 3),
        score(1, 2, "tfidf", "candidate", 0.7301, 3),
        score(1, 3, "bert", "candidate", 0.7519, 3),  # promoted tonight
        score(2, 3, "bert", "champion", 0.7519, 3),
        score(2, 4, "tfidf", "candidate", 0.7402, 3),
        score(2, 5, "bert", "candidate", 0.7555, 3),  # better, but kept: not the champion
    ]
    geometry = chart(scores)
    best = {s["kind"]: [(p["night"], p["version"], p["macro_f1"]) for p in s["points"]] for s in geometry["series"]}
    assert best == {"bert": [("2026-11-21", 3, 0.7519), ("2026-11-22", 5, 0.7555)],
                    "tfidf": [("2026-11-20", 1, 0.7368), ("2026-11-21", 2, 0.7301), ("2026-11-22", 4, 0.7402)]}
    champion = [(p["night"], p["version"], p["macro_f1"], p["promoted"]) for p in geometry["champion"]["points"]]
    assert champion == [("2026-11-20", 1, 0.7368, True), ("2026-11-21", 3, 0.7519, True),
                        ("2026-11-22", 3, 0.7519, False)]
    bert_colour = next(s["colour"] for s in geometry["series"] if s["kind"] == "bert")
    assert geometry["champion"]["points"][1]["colour"] == bert_colour  # ringed in its kind's colour
    # Higher scores sit higher: the promoted night's ring is above the night before.
    first, second, _ = geometry["champion"]["points"]
    assert second["y"] < first["y"]
    assert geometry["champion"]["path"].count(",") == 3


def test_a_night_without_a_decision_shows_the_champion_it_evaluated():
    geometry = chart([score(0, 1, "tfidf", "champion", 0.70, None), score(0, 2, "tfidf", "candidate", 0.71, None)])
    [point] = geometry["champion"]["points"]
    assert (point["version"], point["promoted"]) == (1, False)
    assert chart([])["champion"] is None
