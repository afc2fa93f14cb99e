"""One database lookup: the `textclf_db` connection inside Airflow (extras kept, a missing one
is an error naming it), TEXTCLF_DATABASE_URL or the embedded server outside. No database."""

from __future__ import annotations

import json
import sys

import psycopg2.extensions
import pytest

from tasks import db
from tasks.config import REPO_ROOT, ConfigError, load_settings

EXTRA = {"sslmode": "require", "sslrootcert": "/etc/ssl/ca root.pem",
         "options": "-c statement_timeout=5000", "cursor": "dictcursor"}


def test_connection_url_keeps_libpq_extras_and_percent_encodes_them():
    url = db.connection_url("db.example", 6543, "u@x", "p:ss w", "text clf", EXTRA)
    parsed = psycopg2.extensions.parse_dsn(url)
    assert parsed == {"host": "db.example", "port": "6543", "user": "u@x", "password": "p:ss w",
                      "dbname": "text clf", "sslmode": "require",
                      "sslrootcert": "/etc/ssl/ca root.pem", "options": "-c statement_timeout=5000"}
    assert "+" not in url  # libpq does not read '+' as a space
    assert "cursor" not in url  # an extra for Airflow's hook, not for libpq


@pytest.mark.parametrize("raw", [
    json.dumps({"conn_type": "postgres", "host": "db.example", "port": 6543, "login": "u",
                "password": "p", "schema": "textclf", "extra": EXTRA}),
    json.dumps({"conn_type": "postgres", "host": "db.example", "port": 6543, "login": "u",
                "password": "p", "schema": "textclf", "extra": json.dumps(EXTRA)}),
    "postgres://u:p@db.example:6543/textclf?sslmode=require&sslrootcert=%2Fetc%2Fssl%2Fca%20root.pem"
    "&options=-c%20statement_timeout%3D5000",
    "postgres://u:p@db.example:6543/textclf?__extra__=" + json.dumps(EXTRA).replace(" ", "%20"),
])
def test_the_environment_connection_in_every_airflow_form(raw):
    parsed = psycopg2.extensions.parse_dsn(db.connection_url_from_env(raw))
    assert parsed["host"] == "db.example" and parsed["dbname"] == "textclf"
    assert (parsed["sslmode"], parsed["options"]) == ("require", "-c statement_timeout=5000")
    assert parsed["sslrootcert"] == "/etc/ssl/ca root.pem"


def test_the_embedded_servers_socket_survives_the_round_trip_through_an_airflow_connection(tmp_path):
    from tasks.airflow_env import connection_json

    socket_dir = str(tmp_path / "pg")
    url = f"postgresql://postgres:@/textclf?host={socket_dir}"
    conn = json.loads(connection_json(url))
    assert conn["host"] == socket_dir and "host" not in conn.get("extra", {})
    parsed = psycopg2.extensions.parse_dsn(db.connection_url_from_env(connection_json(url)))
    assert (parsed["host"], parsed["dbname"], parsed["port"]) == (socket_dir, "textclf", "5432")


def test_inside_airflow_a_missing_connection_is_an_error_not_an_embedded_server(monkeypatch, tmp_path):
    monkeypatch.delenv("TEXTCLF_DATABASE_URL")
    monkeypatch.delenv("AIRFLOW_CONN_TEXTCLF_DB", raising=False)
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    settings = load_settings(home=tmp_path)
    with pytest.raises(ConfigError, match="Airflow connection 'textclf_db' is not defined"):
        db.database_url(settings)
    assert not (tmp_path / "pg").exists()


@pytest.fixture
def textclf_airflow(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    sys.modules.pop("textclf_airflow", None)
    import textclf_airflow

    return textclf_airflow


def test_the_dag_and_plugin_read_the_connection_through_airflow(textclf_airflow, monkeypatch):
    from tasks.airflow_env import connection_json

    monkeypatch.delenv("TEXTCLF_DATABASE_URL")
    url = "postgresql://u:p@db.example:6543/textclf?sslmode=verify-full&options=-c%20search_path%3Dx"
    monkeypatch.setenv("AIRFLOW_CONN_TEXTCLF_DB", connection_json(url))
    parsed = psycopg2.extensions.parse_dsn(textclf_airflow.textclf_settings().database_url)
    assert (parsed["host"], parsed["port"], parsed["sslmode"]) == ("db.example", "6543", "verify-full")
    assert parsed["options"] == "-c search_path=x"

    monkeypatch.delenv("AIRFLOW_CONN_TEXTCLF_DB")
    with pytest.raises(ConfigError, match="Airflow connection 'textclf_db' is not defined"):
        textclf_airflow.textclf_settings()
