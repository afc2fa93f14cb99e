"""The operators' day in the real Airflow UI, in headless Chromium (Playwright): the registry page
from the navigation, the trigger form with its defaults untouched and with Params changed, the
backfill dialog, a user without access to the DAG, and a manual promotion reaching the champion
asset. Screenshots go to tests/artifacts/ (two of them are in the README).

Chromium comes from Debian's package (`make test` installs it: tests/install_system_deps.sh): /usr/bin/chromium."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_helpers import AirflowStandalone
from conftest import autocommit_connection, fetch, recreate_database, truncate_project_tables
from support import run_date, seed
from tasks.airflow_env import PASSWORDS_FILE, admin_password, manual_run_interval
from tasks.config import REPO_ROOT, load_settings

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
DAG_ID = "textclf_retrain"
DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def ui(database_url, tmp_path_factory):
    """Two nights in the registry, Airflow standalone with an admin and a user of no role."""
    from sqlalchemy.engine import make_url

    assert Path(CHROMIUM).exists(), "the browser tests need Chromium: apt-get install chromium"
    truncate_project_tables(database_url)
    home = tmp_path_factory.mktemp("browser") / "home"
    settings = load_settings(home=home, database_url=database_url)
    seed(settings, days=4, per_day=60, end=manual_run_interval(DAY.date())[1])
    run_date(settings, DAY - timedelta(days=1), "night-1")
    run_date(settings, DAY, "night-2", max_train_rows=60)
    metadata_db = f"{make_url(database_url).database}_airflow_browser"
    recreate_database(database_url, metadata_db)
    outsider_password, _ = admin_password(home / "airflow", "outsider")
    airflow = AirflowStandalone(home, database_url, extra_env={
        "TEXTCLF_AIRFLOW_DATABASE": metadata_db,
        "TEXTCLF_AIRFLOW_USERS": "admin:admin,outsider:",  # outsider: may log in, may see nothing
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    ARTIFACTS.mkdir(exist_ok=True)
    with airflow:
        airflow.wait_healthy(timeout=300)
        yield airflow, settings, {"outsider": outsider_password}


@pytest.fixture(scope="module")
def browser(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def password(airflow, user: str) -> str:
    return json.loads((airflow.airflow_home / PASSWORDS_FILE).read_text())[user]


def logged_in(browser, airflow, user: str = "admin"):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{airflow.base_url}/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.locator('input[name="username"]').fill(user)
    page.locator('input[name="password"]').fill(password(airflow, user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
    return page


def open_trigger_dialog(page, airflow):
    from playwright.sync_api import expect

    page.goto(f"{airflow.base_url}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    box = dialog.get_by_role("checkbox", name=re.compile(r"Unpause .* on trigger"))
    if box.count() and box.is_checked():  # keep the DAG paused: runs are created, not executed
        dialog.get_by_text(re.compile(r"^Unpause .* on trigger$")).click()
    return dialog


def open_section(dialog, name: str) -> None:
    button = dialog.get_by_role("button", name=name, exact=True)
    if button.get_attribute("aria-expanded") != "true":
        button.click()


def submit(page, dialog) -> dict:
    from playwright.sync_api import expect

    button = dialog.get_by_test_id("trigger-dag-submit")
    expect(button).to_be_enabled()  # with every default untouched too
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith(f"/api/v2/dags/{DAG_ID}/dagRuns")) as response:
        button.click()
    assert response.value.ok, response.value.text()
    expect(dialog).to_be_hidden()
    return response.value.json()


def test_registry_page_from_the_navigation_shows_the_database(ui, browser, pg_reader):
    from playwright.sync_api import expect

    airflow, _, _ = ui
    page = logged_in(browser, airflow)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Model registry").click()
    page.wait_for_url("**/plugin/textclf-registry")
    frame = page.frame_locator('iframe[title="Model registry"]')
    expect(frame.locator("h1")).to_have_text("textclf model registry")
    latest = fetch(pg_reader, """SELECT DISTINCT ON (model_version) model_version, (metrics->>'macro_f1')::float8
                                FROM textclf.evaluations ORDER BY model_version, evaluated_at DESC""")
    assert latest
    for version, test_f1 in latest:
        cell = frame.locator(f'#leaderboard tr[data-version="{version}"] td.test-f1')
        expect(cell).to_have_text(f"{test_f1:.4f}")
    # One kind: its best candidate each night, and apart from it the champion after each decision.
    expect(frame.locator("#nightly-chart polyline")).to_have_count(2)
    expect(frame.locator("#nightly-chart .champion-point")).to_have_count(2)
    expect(frame.locator("#nightly-chart .champion-point.promoted")).to_have_count(1)
    expect(frame.locator("#lifetime-budget")).to_contain_text("1 night(s) judged")
    expect(frame.locator("details.run").first).to_contain_text("beats_champion")
    page.screenshot(path=str(ARTIFACTS / "registry.png"), full_page=True)


def test_trigger_form_with_defaults_untouched_then_with_params(ui, browser):
    airflow, _, _ = ui
    page = logged_in(browser, airflow)
    dialog = open_trigger_dialog(page, airflow)
    run = submit(page, dialog)
    conf = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}").json()["conf"]
    assert conf["candidates"] is None and conf["dry_run"] is False and conf["bert_epochs"] is None

    dialog = open_trigger_dialog(page, airflow)
    open_section(dialog, "Promotion")
    switch = dialog.locator('input[name="element_dry_run"]')
    dialog.locator('label:has(input[name="element_dry_run"])').click()
    assert switch.is_checked()
    dialog.locator('input[name="element_min_delta"]').fill("-0.5")
    open_section(dialog, "Training")
    dialog.locator('input[name="element_bert_epochs"]').fill("2")
    candidates = dialog.locator("#element_candidates")  # a multi-select of the kinds (examples)
    candidates.click()
    page.keyboard.type("tfidf")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # Escape would close the whole dialog
    page.screenshot(path=str(ARTIFACTS / "trigger-form.png"))
    run = submit(page, dialog)
    conf = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}").json()["conf"]
    assert (conf["candidates"], conf["dry_run"], conf["min_delta"], conf["bert_epochs"]) == (
        ["tfidf"], True, -0.5, 2)


def test_backfill_dialog_creates_three_runs_oldest_first(ui, browser):
    from playwright.sync_api import expect

    airflow, _, _ = ui
    page = logged_in(browser, airflow)
    dialog = open_trigger_dialog(page, airflow)
    dialog.get_by_text("Backfill", exact=True).click()
    expect(dialog.get_by_role("heading", name=f"Run Backfill - {DAG_ID}")).to_be_visible()
    box = dialog.get_by_role("checkbox", name=re.compile(r"Unpause .* on trigger"))
    if box.count() and box.is_checked():
        dialog.get_by_text(re.compile(r"^Unpause .* on trigger$")).click()

    def set_datetime(label: str, day: str, time_of_day: str) -> None:
        field = dialog.locator("[data-scope=field][data-part=root]", has=page.locator(f'label:text-is("{label}")'))
        field.get_by_test_id("datetime-input").click()
        popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
        popover.get_by_placeholder("YYYY/MM/DD").fill(day)
        popover.get_by_placeholder("HH:mm").fill(time_of_day)
        page.keyboard.press("Escape")
        expect(popover).to_have_count(0)

    set_datetime("From", "2026/11/10", "00:00")
    set_datetime("To", "2026/11/12", "02:00")  # runs are at 02:00 UTC: the third is 11-12 02:00
    expect(dialog.get_by_text("3 runs will be triggered.")).to_be_visible()
    expect(dialog.locator('input[name="max_active_runs"]')).to_have_value("1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v2/backfills")) as rsp:
        dialog.get_by_role("button", name="Run Backfill").click()
    assert rsp.value.ok, rsp.value.text()
    runs = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                       params={"run_type": "backfill", "order_by": "logical_date"}).json()["dag_runs"]
    assert [r["logical_date"] for r in runs] == [f"2026-11-{d}T02:00:00Z" for d in (10, 11, 12)]


def test_a_user_without_access_to_the_dag_is_refused_the_registry(ui, browser):
    import httpx

    airflow, _, passwords = ui
    token = httpx.post(f"{airflow.base_url}/auth/token",
                       json={"username": "outsider", "password": passwords["outsider"]}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/textclf/registry.json", "/textclf/", "/textclf/runs/night-1/report/index.html"):
        assert httpx.get(f"{airflow.base_url}{path}", headers=headers).status_code == 403, path
    assert airflow.api("GET", "/textclf/registry.json").status_code == 200  # the admin may
    page = logged_in(browser, airflow, "outsider")
    response = page.goto(f"{airflow.base_url}/textclf/")
    assert response.status == 403 and "Forbidden" in page.content()


def test_a_manual_promotion_emits_the_champion_asset_event(ui, monkeypatch, tmp_path, capsys):
    from tasks.cli import main

    airflow, settings, _ = ui
    config = tmp_path / "textclf.toml"
    config.write_text(f'[airflow]\napi_url = "{airflow.base_url}"\n'
                      f'password_file = "{airflow.airflow_home / PASSWORDS_FILE}"\n')
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))
    monkeypatch.setenv("TEXTCLF_HOME", str(settings.home))
    [(version,)] = fetch_one_non_champion(settings)
    assert main(["promote", str(version), "--reason", "canary looked good", "--actor", "ops"]) == 0
    out = capsys.readouterr().out
    assert "Airflow told: event" in out
    [asset] = [a for a in airflow.api("GET", "/api/v2/assets").json()["assets"] if a["name"] == "textclf_champion"]
    events = airflow.api("GET", "/api/v2/assets/events", params={"asset_id": asset["id"]}).json()["asset_events"]
    assert events[-1]["extra"]["version"] == version and events[-1]["extra"]["change"] == "manual promotion"


def fetch_one_non_champion(settings):
    with autocommit_connection(settings.database_url) as conn:
        return fetch(conn, """SELECT version FROM textclf.model_versions mv WHERE NOT EXISTS (
            SELECT 1 FROM textclf.champion_history h WHERE h.model_version = mv.version AND h.valid_to IS NULL)
            ORDER BY version DESC LIMIT 1""")


@pytest.fixture
def pg_reader(database_url):
    with autocommit_connection(database_url) as conn:
        yield conn
