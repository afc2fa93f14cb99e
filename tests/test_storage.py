"""Run data on shared storage: every step can run on another host (another TEXTCLF_HOME) as long
as they share run_root and artifact_root, local folders or any fsspec URI: here a real S3 API
(moto's server on loopback) reached through the standard AWS environment or an Airflow
connection, and fsspec's memory store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conftest import fetch, register_tiny
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


@pytest.mark.parametrize("root", ["shared-folder", "memory://textclf-shared", "s3"])
def test_each_step_on_another_host_with_only_the_roots_shared(settings, pg, tmp_path, root, request):
    shared = (request.getfixturevalue("s3_bucket") if root == "s3"
              else root if "://" in root else str(tmp_path / root))
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


def _load_in_another_process(settings, version: int, start_at: float) -> str:
    import time

    from support import in_transaction
    from tasks import registry

    time.sleep(max(0.0, start_at - time.time()))
    model = in_transaction(settings, registry.load_model, settings, version)
    return str(model.labels[int(model.predict_proba(["a text"]).argmax())])


def test_concurrent_loads_of_one_remote_version_on_one_host_all_succeed(settings, s3_bucket, tiny_tfidf_dir):
    """Four processes load the same version from S3 at the same moment into one host's empty
    cache: each downloads into its own temporary folder and renames it into place."""
    import multiprocessing
    import time

    settings = replace(settings, artifact_root=f"{s3_bucket}/models")
    version = register_tiny(settings, tiny_tfidf_dir)
    for trial in range(2):
        cache = settings.home / "cache" / "models" / str(version)
        storage.remove_tree(storage.upath(cache))
        start_at = time.time() + 1.5
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            results = pool.starmap(_load_in_another_process, [(settings, version, start_at)] * 4)
        assert len(results) == 4 and len(set(results)) == 1, trial
        assert cache.is_dir() and not [p for p in cache.parent.iterdir() if p.name.startswith(".")]


def test_a_corrupt_cache_is_replaced_and_a_corrupt_artifact_refused(settings, s3_bucket, tiny_tfidf_dir):
    from support import in_transaction
    from tasks import registry
    from tasks.errors import ChecksumMismatch

    settings = replace(settings, artifact_root=f"{s3_bucket}/models")
    version = register_tiny(settings, tiny_tfidf_dir)
    _, cached = in_transaction(settings, registry.fetch_artifact, settings, version)
    victim = next(p for p in sorted(cached.rglob("*")) if p.is_file())
    victim.write_bytes(b"tampered on this host")
    _, again = in_transaction(settings, registry.fetch_artifact, settings, version)
    assert again == cached and victim.read_bytes() != b"tampered on this host"  # fetched afresh

    remote = storage.upath(f"{s3_bucket}/models/{version}") / victim.relative_to(cached).as_posix()
    remote.write_bytes(b"tampered in the store")
    victim.write_bytes(b"and here")
    with pytest.raises(ChecksumMismatch, match=f"model version {version}"):
        in_transaction(settings, registry.fetch_artifact, settings, version)


def test_credentials_from_an_airflow_connection(airflow_ready, clean_db, s3_endpoint, s3_bucket, tmp_path, monkeypatch):
    """No AWS_* variable at all: storage_conn_id names an aws connection (access key, secret,
    endpoint_url in its extra) and textclf_settings opens the store with it."""
    import json

    import s3fs

    from conftest import REPO_ROOT, S3_CREDENTIALS
    from tasks.db import CONNECTION_ID

    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))  # as in every Airflow process
    from textclf_airflow import textclf_settings

    for name in [*S3_CREDENTIALS, "AWS_ENDPOINT_URL"]:
        monkeypatch.delenv(name)
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("TEXTCLF_HOME", str(tmp_path))
    (tmp_path / "textclf.toml").write_text(
        f'storage_conn_id = "textclf_store"\nartifact_root = "{s3_bucket}/models"\n')
    from sqlalchemy.engine import make_url

    url = make_url(clean_db)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTION_ID.upper()}", json.dumps({
        "conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
        "schema": url.database}))
    monkeypatch.setenv("AIRFLOW_CONN_TEXTCLF_STORE", json.dumps({
        "conn_type": "aws", "login": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "password": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}))
    settings = textclf_settings()
    target = storage.upath(f"{settings.artifact_root}/probe.txt")
    storage.write_text(target, "written with the connection's credentials")
    assert storage.read_text(f"{s3_bucket}/models/probe.txt").startswith("written with")
    assert storage.upath(settings.artifact_root).fs.key == S3_CREDENTIALS["AWS_ACCESS_KEY_ID"]
