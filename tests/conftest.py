"""Shared fixtures: a real PostgreSQL database for the tests, fresh per session.

The server is TEXTCLF_TEST_DATABASE_URL when set, else the one on 127.0.0.1:5432 (user
postgres), else, when nothing listens there (a laptop without PostgreSQL), an embedded server
from pgserver under ``.textclf/test-pg``, as ``make demo`` does. The database `textclf_test` is
dropped and recreated the first time a test asks for it: tests that need no database never
touch the server. Airflow is pointed at a database of its own on the same server and a
temporary AIRFLOW_HOME, before anything imports it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_TEST_SERVER = REPO_ROOT / ".textclf" / "test-pg"


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _test_database_url() -> tuple[str, bool]:
    """(URL, whether it is the embedded server, to be started on first use)."""
    if os.environ.get("TEXTCLF_TEST_DATABASE_URL"):
        return os.environ["TEXTCLF_TEST_DATABASE_URL"], False
    if _listening("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/textclf_test", False
    # pgserver listens on a Unix socket in its data directory.
    return f"postgresql://postgres:@/textclf_test?host={EMBEDDED_TEST_SERVER}", True


TEST_DATABASE_URL, EMBEDDED = _test_database_url()
os.environ["TEXTCLF_TEST_DATABASE_URL"] = TEST_DATABASE_URL
os.environ["TEXTCLF_DATABASE_URL"] = TEST_DATABASE_URL
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
SESSION_HOME = Path(tempfile.mkdtemp(prefix="textclf-test-"))
os.environ["TEXTCLF_HOME"] = str(SESSION_HOME)
os.environ.pop("TEXTCLF_CONFIG", None)
os.environ.pop("AIRFLOW_CONN_TEXTCLF_DB", None)

TABLES = (
    "predictions", "champion_history", "promotion_decisions", "evaluations", "model_versions",
    "pipeline_events", "label_sets", "validation_runs", "quarantine", "documents",
    "labelled_texts",
)


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name
    return name


def url_for_database(url: str, name: str) -> str:
    """``url`` pointing at another database on the same server."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def recreate_database(url: str, name: str | None = None) -> None:
    """Drop and create database ``name`` (default: the one ``url`` names) on ``url``'s server."""
    name = name or database_name(url)
    admin = psycopg2.connect(url_for_database(url, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()


# Airflow reads its configuration when first imported: point it at a metadata database of its
# own on the test server and at this repository's dags/ before any test imports it.
os.environ["TEXTCLF_AIRFLOW_DATABASE"] = database_name(TEST_DATABASE_URL) + "_airflow"
from tasks.airflow_env import airflow_environment  # noqa: E402
from tasks.config import load_settings  # noqa: E402

os.environ.update(airflow_environment(load_settings()))
os.environ["TEXTCLF_IN_PROCESS_RUN"] = "1"  # the tests' dag.test() runs: see dags/textclf_retrain.py
os.environ["TEXTCLF_DATABASE_URL"] = TEST_DATABASE_URL  # (the Airflow environment drops it)


@pytest.fixture(scope="session")
def database_url() -> str:
    """The test database, created fresh (and the embedded server started) on first use."""
    from tasks import db

    if EMBEDDED:
        db.embedded_server(EMBEDDED_TEST_SERVER.parent, EMBEDDED_TEST_SERVER.name)
    recreate_database(TEST_DATABASE_URL)
    db.upgrade(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture(scope="session")
def airflow_ready(database_url) -> None:
    """Airflow's metadata database migrated and the `gpu` pool created."""
    from tasks.airflow_env import prepare_airflow

    prepare_airflow(load_settings(), dict(os.environ))


def truncate_project_tables(url: str) -> None:
    """Empty project tables (schema kept)."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier("textclf", t) for t in TABLES)
            )
        )
    conn.close()


@contextmanager
def autocommit_connection(url: str) -> Iterator[psycopg2.extensions.connection]:
    """A plain connection for assertions."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def clean_db(database_url):
    """Empty project tables (schema kept) so each test starts from nothing."""
    truncate_project_tables(database_url)
    return database_url


@pytest.fixture
def settings(clean_db, tmp_path):
    return load_settings(home=tmp_path / "home", database_url=clean_db)


@pytest.fixture
def offline_settings(tmp_path):
    """Settings for pure tests: a database URL nothing listens on, so a test that reaches for
    the server by mistake fails at once instead of touching the shared test database."""
    return load_settings(home=tmp_path / "home", database_url="postgresql://nobody@127.0.0.1:9/unreachable")


@pytest.fixture
def pg(clean_db):
    """A plain connection for assertions (autocommit)."""
    with autocommit_connection(clean_db) as conn:
        yield conn


def fetch(conn, statement: str, params=()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


CORPUS_WORDS = {
    "negative": ["awful", "terrible", "hate", "broken", "worst", "angry"],
    "neutral": ["schedule", "meeting", "tuesday", "report", "address", "table"],
    "positive": ["great", "love", "wonderful", "happy", "excellent", "best"],
}


def synthetic_corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """An easily separable 3-class corpus: (text, label)."""
    import random

    rng = random.Random(seed)
    labels = sorted(CORPUS_WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(CORPUS_WORDS[label], 3) + rng.sample(["the", "a", "it", "was"], 2)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" #{i}", label))
    return rows


@pytest.fixture(scope="session")
def tiny_tfidf_dir(tmp_path_factory):
    """A real TF-IDF model trained on the synthetic corpus, saved with skops."""
    from tasks.candidates.tfidf import TfidfConfig
    from tasks.candidates.tfidf.training import train_tfidf

    rows = synthetic_corpus(300)
    texts, labels = [t for t, _ in rows], [label for _, label in rows]
    model, _ = train_tfidf(texts[:240], labels[:240], texts[240:], labels[240:],
                           sorted(CORPUS_WORDS), TfidfConfig(alphas=(1e-4,), min_df=1))
    directory = tmp_path_factory.mktemp("tfidf")
    model.save(directory)
    return directory


def register_tiny(settings, directory, key: str = "k1") -> int:
    from tasks import db, registry

    with db.transaction(settings) as cur:
        return registry.register_model(
            cur, settings, kind="tfidf", staged_dir=directory, labels=sorted(CORPUS_WORDS),
            params={"test": key}, metrics={"val_macro_f1": 1.0}, data_fingerprint=None,
            run_id="test", logical_date=None, train_seconds=1.0, peak_memory_bytes=None,
            training_key=key,
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server, from PyPI) on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "textclf-test", "AWS_SECRET_ACCESS_KEY": "textclf-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request) -> str:
    """A fresh bucket, reached the way any AWS tool reaches S3: the standard environment
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Returns ``s3://<bucket>``."""
    import re

    import boto3
    import fsspec.config
    import s3fs

    for name, value in {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(fsspec.config, "conf", {})
    s3fs.S3FileSystem.clear_instance_cache()
    import uuid

    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"t-{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()
