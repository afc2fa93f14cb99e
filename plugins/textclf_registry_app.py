"""The registry page and its JSON endpoints (mounted at /textclf by textclf_registry.py).

Every route needs read access to the `textclf_retrain` DAG, decided by Airflow's auth manager
through the public `requires_access_dag` dependency (the UI's cookie or a bearer token). The data
come from tasks.dashboard; the page is a Jinja2 template with inline SVG charts (no script, no
CDN). OpenAPI schema at /textclf/openapi.json, interactive docs at /textclf/docs.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

DAG_ID = "textclf_retrain"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "textclf_templates"))

app = FastAPI(
    title="textclf model registry",
    description="Model versions, champion history and nightly decisions of textclf_retrain.",
    docs_url="/docs",
    redoc_url=None,
    dependencies=[Depends(requires_access_dag("GET", param_dag_id=DAG_ID))],
)


class ModelVersion(BaseModel):
    version: int
    kind: str
    created_at: datetime
    run_id: str | None
    is_champion: bool
    val_macro_f1: float | None
    test_macro_f1: float | None
    diff_vs_champion: float | None
    ci_low: float | None
    ci_high: float | None
    evaluated_in: str | None
    artifact_uri: str
    size_bytes: int | None


class ChampionPeriod(BaseModel):
    model_version: int
    kind: str
    valid_from: datetime
    valid_to: datetime | None
    effective_from: datetime
    reason: str
    actor: str


class LifetimeBudget(BaseModel):
    """How much of the current champion's lifetime error budget its reign has spent."""

    version: int
    since: datetime
    nights: int
    window: int
    window_nights: int
    spent: float
    alpha: float
    next_level: float


class Registry(BaseModel):
    champion: ModelVersion | None
    budget: LifetimeBudget | None
    models: list[ModelVersion]
    history: list[ChampionPeriod]


class Rule(BaseModel):
    rule: str
    passed: bool
    detail: str


class Verdict(BaseModel):
    version: int
    kind: str
    macro_f1: float
    qualifies: bool
    rules: list[Rule]


class NightBudget(BaseModel):
    """The night's share of the champion's lifetime budget, as its decision recorded it."""

    night: int
    level: float
    spent_before: float
    window_nights: int
    rerun: bool
    alpha: float
    spent: bool


class Run(BaseModel):
    run_id: str
    interval_start: datetime
    interval_end: datetime
    validation: str
    new_rows: int
    snapshot_rows: int
    quarantined_rows: int
    failures: list[str]
    decision: str | None
    summary: str | None
    champion_before: int | None
    champion_after: int | None
    verdicts: list[Verdict]
    evaluated: int
    budget: NightBudget | None


def _snapshot() -> dict[str, Any]:
    import psycopg2
    from textclf_airflow import textclf_settings

    from tasks import dashboard

    try:
        return dashboard.snapshot(textclf_settings())
    except psycopg2.OperationalError as exc:
        raise HTTPException(status_code=503, detail=f"registry database unavailable: {exc}") from exc


@app.get("/registry.json", response_model=Registry, summary="Model versions and champion history")
def registry_json() -> dict[str, Any]:
    data = _snapshot()
    return {"champion": data["champion"], "budget": data["budget"], "models": data["models"],
            "history": data["history"]}


@app.get("/runs.json", response_model=list[Run], summary="The latest runs: validation and decision")
def runs_json() -> list[dict[str, Any]]:
    return _snapshot()["runs"]


@app.get("/chart.json", summary="Test macro-F1 per night: best candidate per kind, champion after the decision")
def chart_json() -> dict[str, Any]:
    return _snapshot()["chart"]


@app.get("/runs/{run_id}/report/{path:path}", summary="A run's study report (HTML and plots)",
         response_class=Response)
def report_file(run_id: str, path: str = "index.html") -> Response:
    from textclf_airflow import textclf_settings

    from tasks.dashboard import run_was_evaluated

    relative = PurePosixPath(path or "index.html")
    if relative.is_absolute() or ".." in relative.parts:
        raise HTTPException(status_code=400, detail="invalid report path")
    settings = textclf_settings()
    # Only runs the registry knows: a run id is never a path of its own (%2e%2e, slashes...).
    if not run_was_evaluated(settings, run_id):
        raise HTTPException(status_code=404, detail=f"no evaluated run {run_id!r}")
    target = settings.run_dir(run_id) / "report" / str(relative)
    if not target.is_file():
        raise HTTPException(status_code=404, detail=f"no report file {path!r} for run {run_id!r}")
    media_type = mimetypes.guess_type(relative.name)[0] or "application/octet-stream"
    # Reports hold text from the data (labels, snippets): served sandboxed, they run no script
    # and reach no cookie of the Airflow UI whatever a label contains.
    return Response(content=target.read_bytes(), media_type=media_type,
                    headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"})


@app.get("/", response_class=HTMLResponse, summary="The registry page")
def registry_page(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "registry.html", {"data": _snapshot(), "dag_id": DAG_ID})
