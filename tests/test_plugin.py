"""The registry plugin: loads the way Airflow loads plugins, and serves the registry from PostgreSQL.

Rows go into a database of their own on the test server (``<test database>_plugin``, recreated
per run), so champion rows written here never meet those of other tests.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import sql

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
TEST_DATABASE_URL = os.environ.get(
    "TEXTCLF_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/textclf_test"
)
RUN_ID = "scheduled__2026-11-19T02:00:00+00:00"
XSS = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def plugin():
    """The plugin instance and its module, loaded by Airflow's own plugins-folder loader."""
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS_DIR))
    assert errors == {}
    [instance] = [p for p in plugins if p.name == "textclf_registry"]
    return instance, sys.modules[type(instance).__module__]


def test_plugin_follows_airflow_plugin_conventions(plugin):
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import (
        ExternalViewResponse,
        FastAPIAppResponse,
    )
    from airflow.plugins_manager import is_valid_plugin
    from fastapi import FastAPI

    instance, _ = plugin
    assert is_valid_plugin(type(instance))
    [entry] = instance.fastapi_apps
    assert isinstance(entry["app"], FastAPI)
    assert not any(entry["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    FastAPIAppResponse.model_validate({**entry, "app": "FastAPI"})
    [view] = instance.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert parsed.destination == "nav" and parsed.url_route
    assert parsed.href == entry["url_prefix"].lstrip("/") + "/"  # relative to the UI base URL


def test_routes_require_an_airflow_user(plugin, monkeypatch):
    """No credentials: 401; a token Airflow's auth manager rejects, as header or UI cookie: 403."""
    from airflow.api_fastapi import app as api_app
    from fastapi.testclient import TestClient

    _, module = plugin
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setattr(api_app._AuthManagerState, "instance", None)
    api_app.create_auth_manager()
    client = TestClient(module.app)
    assert client.get("/").status_code == 401
    assert client.get("/registry.json").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    client.cookies.set("_token", "not-a-jwt")  # how the UI's iframe authenticates
    assert client.get("/registry.json").status_code == 403


# --- against PostgreSQL ------------------------------------------------------------------------


def _on_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


@pytest.fixture(scope="module")
def registry_url():
    """A fresh database with two model versions, v2 champion after v1, one reason with markup."""
    from tasks import db

    name = urlsplit(TEST_DATABASE_URL).path.lstrip("/") + "_plugin"
    admin = psycopg2.connect(_on_database(TEST_DATABASE_URL, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    url = _on_database(TEST_DATABASE_URL, name)
    db.upgrade(url)

    def version(cur, kind, metrics):
        return db.upsert_model_version(cur, {
            "kind": kind, "labels": ["negative", "neutral", "positive"], "params": {},
            "metrics": metrics, "artifact_uri": f"/data/models/{kind}", "artifact_sha256": "0" * 64,
            "size_bytes": 1, "data_fingerprint": None, "code_version": "test", "run_id": RUN_ID,
            "logical_date": datetime(2026, 11, 19, 2, tzinfo=UTC), "train_seconds": 1.0,
            "peak_memory_bytes": None, "training_key": f"plugin-test-{kind}",
        })

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        v1 = version(cur, "tfidf", {"macro_f1": 0.6123, "val_macro_f1": 0.6})
        v2 = version(cur, "bert", {"macro_f1": 0.7345, "val_macro_f1": 0.71})
        db.lock_champion(cur)
        db.switch_champion(cur, v1, "first model", "textclf_retrain", None)
        db.switch_champion(cur, v2, f"better macro-F1 {XSS}", "ops@example.com", None)
    conn.close()
    return url


@pytest.fixture
def client(plugin, registry_url, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    _, module = plugin
    from tasks.airflow_env import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_TEXTCLF_DB", connection_json(registry_url))
    monkeypatch.setenv("TEXTCLF_HOME", str(tmp_path))
    monkeypatch.delenv("TEXTCLF_CONFIG", raising=False)
    module.app.dependency_overrides[module.require_airflow_user] = lambda: None
    yield TestClient(module.app)
    module.app.dependency_overrides.clear()


def test_page_lists_versions_champion_and_history(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<td>v1</td><td>tfidf</td>" in page
    assert "<td>v2</td><td>bert</td>" in page
    assert "<strong>v2</strong> (bert)" in page  # the current champion
    assert "macro_f1&nbsp;0.7345" in page
    assert "ops@example.com" in page and "first model" in page
    assert XSS not in page and "&lt;script&gt;" in page
    assert f"runs/{RUN_ID.replace(':', '%3A').replace('+', '%2B')}" in page


def test_json_endpoint(client):
    response = client.get("/registry.json")
    assert response.status_code == 200
    data = response.json()
    assert [m["kind"] for m in data["models"]] == ["tfidf", "bert"]
    assert data["champion"]["kind"] == "bert" and data["champion"]["is_champion"] is True
    assert [h["actor"] for h in data["history"]] == ["textclf_retrain", "ops@example.com"]
    assert data["history"][0]["valid_to"] == data["history"][1]["valid_from"]
