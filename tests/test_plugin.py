"""The registry plugin: loads the way Airflow loads plugins, serves the registry, the nightly
chart, the champion timeline and each run's decision rule by rule from PostgreSQL, behind the
auth manager's DAG read access. (The real api-server and a browser: tests/test_browser.py.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from support import in_transaction, run_date, seed
from tasks.config import REPO_ROOT

PLUGINS_DIR = REPO_ROOT / "plugins"
XSS = "<script>alert('x')</script>"
DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def plugin():
    """The plugin instance and its FastAPI app, loaded by Airflow's own plugins-folder loader."""
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    sys.path.insert(0, str(PLUGINS_DIR))
    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS_DIR))
    assert errors == {}
    [instance] = [p for p in plugins if p.name == "textclf_registry"]
    [entry] = instance.fastapi_apps
    return instance, entry["app"]


def test_plugin_follows_airflow_plugin_conventions(plugin):
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, FastAPIAppResponse
    from airflow.plugins_manager import is_valid_plugin
    from fastapi import FastAPI

    instance, app = plugin
    assert is_valid_plugin(type(instance)) and isinstance(app, FastAPI)
    [entry] = instance.fastapi_apps
    assert not any(entry["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    FastAPIAppResponse.model_validate({**entry, "app": "FastAPI"})
    [view] = instance.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert parsed.destination == "nav" and parsed.url_route
    assert parsed.href == entry["url_prefix"].lstrip("/") + "/"  # relative to the UI base URL


def test_loading_the_plugin_does_not_import_the_api_servers_security_module():
    code = (f"import sys; sys.path.insert(0, {str(PLUGINS_DIR)!r}); import textclf_registry; "
            "print('airflow.api_fastapi.core_api.security' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_routes_require_read_access_to_the_dag(plugin, monkeypatch):
    """No credentials: 401; a token the auth manager rejects, as header or UI cookie: 403. The
    dependency is Airflow's public requires_access_dag for GET on textclf_retrain."""
    from airflow.api_fastapi import app as api_app
    from fastapi.testclient import TestClient

    _, app = plugin
    [dependency] = app.router.dependencies
    assert dependency.dependency.__qualname__.startswith("requires_access_dag")
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setattr(api_app._AuthManagerState, "instance", None)
    api_app.create_auth_manager()
    client = TestClient(app)
    for path in ("/", "/registry.json", "/runs.json", "/runs/x/report/index.html"):
        assert client.get(path).status_code == 401, path
    assert client.get("/", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    client.cookies.set("_token", "not-a-jwt")  # how the UI's iframe authenticates
    assert client.get("/registry.json").status_code == 403


@pytest.fixture
def client(plugin, settings, monkeypatch):
    """The app without the auth check, on a registry with two nights: a promotion, then a night
    whose challenger did not qualify; plus a champion change with markup in its reason."""
    from fastapi.testclient import TestClient

    from tasks import registry
    from tasks.airflow_env import manual_run_interval

    _, app = plugin
    monkeypatch.setenv("TEXTCLF_HOME", str(settings.home))
    seed(settings, days=4, per_day=60, end=manual_run_interval(DAY.date())[1])
    run_date(settings, DAY - timedelta(days=1), "night-1")
    second = run_date(settings, DAY, "night-2", max_train_rows=60)
    in_transaction(settings, registry.set_champion, settings, second["candidate"]["version"], reason=f"manual {XSS}",
                          actor="ops@example.com")
    [dependency] = app.router.dependencies
    app.dependency_overrides[dependency.dependency] = lambda: None
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_page_shows_leaderboard_chart_timeline_and_decisions(client, pg):
    from conftest import fetch

    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for version, test_f1 in fetch(pg, """
            SELECT DISTINCT ON (model_version) model_version, (metrics->>'macro_f1')::float8
            FROM textclf.evaluations ORDER BY model_version, evaluated_at DESC"""):
        assert f'<tr data-version="{version}">' in page
        assert f"{test_f1:.4f}" in page  # the leaderboard's test macro-F1 is the database's
    # One kind (tfidf): its best candidate each night, and the champion after each decision.
    assert 'id="nightly-chart"' in page and page.count("<polyline") == 2
    assert 'class="candidate-line"' in page and 'class="champion-line"' in page
    assert "champion-point promoted" in page and "lifetime-budget" in page and "Lifetime budget: night 1" in page
    assert "champion-point" in page and "<script" not in page.lower().replace(XSS.lower(), "")
    assert "ops@example.com" in page and XSS not in page and "&lt;script&gt;" in page
    assert "beats_champion" in page and "no_class_regression" in page  # rule by rule
    assert "runs/night-1/report/index.html" in page and "../dags/textclf_retrain/runs/night-2" in page


def test_json_endpoints_follow_their_openapi_schema(client):
    registry = client.get("/registry.json").json()
    assert registry["champion"]["is_champion"] and len(registry["models"]) == 2
    assert [h["actor"] for h in registry["history"]][-1] == "ops@example.com"
    runs = client.get("/runs.json").json()
    assert [r["run_id"] for r in runs] == ["night-2", "night-1"]
    assert runs[1]["decision"] == "promoted" and runs[0]["decision"] == "kept"
    assert runs[0]["verdicts"][0]["rules"][0]["rule"] == "macro_f1_floor"
    chart = client.get("/chart.json").json()
    assert [s["kind"] for s in chart["series"]] == ["tfidf"] and len(chart["series"][0]["points"]) == 2
    assert [p["promoted"] for p in chart["champion"]["points"]] == [True, False]
    assert runs[0]["budget"]["night"] == 1 and runs[0]["budget"]["spent"] and runs[1]["budget"] is None
    # The manual promotion began a new reign: its budget is untouched.
    assert (registry["budget"]["version"], registry["budget"]["nights"], registry["budget"]["spent"]) == (
        registry["champion"]["version"], 0, 0.0)
    schema = client.get("/openapi.json").json()
    assert {"/registry.json", "/runs.json", "/chart.json", "/runs/{run_id}/report/{path}"} <= set(schema["paths"])
    assert "Verdict" in schema["components"]["schemas"]


def test_study_reports_are_served_from_run_storage_and_paths_cannot_escape(client):
    response = client.get("/runs/night-1/report/index.html")
    assert response.status_code == 200 and "textclf run night-1" in response.text
    assert client.get("/runs/night-1/report/confusion_v1_tfidf.png").status_code in (200, 404)
    assert client.get("/runs/night-1/report/..%2F..%2Fclean.parquet").status_code in (400, 404)
    assert client.get("/runs/night-1/report/missing.html").status_code == 404
    assert response.headers["content-security-policy"] == "sandbox"  # no script runs in a report
    # A run id is checked against the database, never used as a path of its own.
    for run_id in ("%2e%2e", "..", "night-1%2F..", "never-ran"):
        assert client.get(f"/runs/{run_id}/report/index.html").status_code in (400, 404), run_id
