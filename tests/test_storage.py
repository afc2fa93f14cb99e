"""Run data on shared storage: every step can run on another host (another TEXTCLF_HOME) as long
as they share run_root and artifact_root, local folders or any fsspec URI."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conftest import fetch
from support import seed
from tasks import storage
from tasks.airflow_env import manual_run_interval
from tasks.pipeline import (
    RunOptions,
    evaluate_step,
    extract_step,
    predict_step,
    promote_step,
    train_step,
    validate_step,
)

DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize("root", ["shared-folder", "memory://textclf-shared"])
def test_each_step_on_another_host_with_only_the_roots_shared(settings, pg, tmp_path, root):
    shared = root if "://" in root else str(tmp_path / root)
    hosts = [replace(settings, home=tmp_path / f"host-{name}", run_root=f"{shared}/runs",
                     artifact_root=f"{shared}/models") for name in "abc"]
    a, b, c = hosts
    start, end = manual_run_interval(DAY.date())
    seed(a, days=3, per_day=60, end=end)
    options = RunOptions(candidates=("tfidf",))

    snapshot = extract_step(a, "run-1", start, end)
    validation = validate_step(b, "run-1", DAY, snapshot)
    candidate = train_step(c, "tfidf", "run-1", DAY, validation, options)
    evaluation = evaluate_step(a, "run-1", validation, [candidate], options)
    promotion = promote_step(b, "run-1", validation, evaluation)
    prediction = predict_step(c, "run-1", DAY, validation)

    assert promotion["promoted"] and prediction["rows_written"] > 0
    run_dir = storage.upath(f"{shared}/runs/run-1")
    for name in ("snapshot.parquet", "clean.parquet", "evaluation.json", "report/index.html",
                 "data_docs/index.html"):
        assert (run_dir / name).is_file(), name
    for handed_on in (snapshot["path"], validation["clean_path"], evaluation["evaluation_path"],
                      evaluation["report"], validation["data_docs"]):
        assert handed_on.startswith(shared), handed_on
    [(artifact,)] = fetch(pg, "SELECT artifact_uri FROM textclf.model_versions")
    assert artifact.startswith(f"{shared}/models")
    for host in hosts:  # nothing another host needed was left in one host's home
        assert not (host.home / "runs").exists()
