"""Model registry views in the Airflow UI: every model version, the champion and its history.

The API server mounts the FastAPI app below at ``/textclf``: ``/textclf/`` is an HTML page,
``/textclf/registry.json`` the same data as JSON. An external view adds "Model registry" to the
navigation bar and renders the page in an iframe. All data comes from ``tasks.registry``; this
file only renders it.

Airflow mounts plugin apps without its own authentication, so every route here asks for an
Airflow user explicitly (the UI's ``_token`` cookie, or ``Authorization: Bearer <JWT>`` from
``POST /auth/token``).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

URL_PREFIX = "/textclf"
DAG_ID = "textclf_retrain"
KEY_METRICS = ("macro_f1", "val_macro_f1", "accuracy", "weighted_f1", "ece")

_bearer = HTTPBearer(auto_error=False)


async def require_airflow_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
):
    """An authenticated Airflow user who may see the UI, by the configured auth manager's rules."""
    # Imported here, not at module level: schedulers, dag processors and task processes load
    # this plugin too, and the API's security module costs them ~2 s of imports for nothing.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request=request, _oauth_token=None, bearer_credentials=credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    return user


app = FastAPI(
    title="textclf model registry",
    docs_url=None,
    redoc_url=None,
    dependencies=[Depends(require_airflow_user)],
)


def _settings():
    from textclf_airflow import textclf_settings

    return textclf_settings()


def registry_snapshot() -> dict[str, Any]:
    import psycopg2

    from tasks import registry

    settings = _settings()
    try:
        models = registry.list_models(settings)
        history = registry.champion_history(settings)
    except psycopg2.OperationalError as exc:
        raise HTTPException(status_code=503, detail=f"registry database unavailable: {exc}") from exc
    champion = next((m for m in models if m.get("is_champion")), None)
    return {"champion": champion, "models": models, "history": history}


@app.get("/registry.json")
def registry_json() -> dict[str, Any]:
    return registry_snapshot()


@app.get("/", response_class=HTMLResponse)
def registry_page() -> HTMLResponse:
    return HTMLResponse(render_page(registry_snapshot()))


# --- rendering --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "—" if value is None else _e(value)


def _metrics(metrics: dict[str, Any] | None) -> str:
    shown = [
        f"{_e(k)}&nbsp;{v:.4f}" if isinstance(v, float) else f"{_e(k)}&nbsp;{_e(v)}"
        for k in KEY_METRICS
        if isinstance(v := (metrics or {}).get(k), (int, float, str))
    ]
    return ", ".join(shown) or "—"


def _run_link(run_id: str | None) -> str:
    if not run_id:
        return "—"
    # The page is served at <base>/textclf/, so ../dags/... is the run's page in the Airflow UI.
    href = f"../dags/{quote(DAG_ID, safe='')}/runs/{quote(run_id, safe='')}"
    return f'<a href="{_e(href)}" target="_top">{_e(run_id)}</a>'


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(snapshot: dict[str, Any]) -> str:
    """The registry as one HTML page; every value from the database is escaped."""
    champion = snapshot["champion"]
    if champion:
        since = next(
            (h["valid_from"] for h in snapshot["history"]
             if h["model_version"] == champion["version"] and h["valid_to"] is None),
            None,
        )
        champion_html = (
            f"<p class=champion><strong>v{_e(champion['version'])}</strong> "
            f"({_e(champion['kind'])}) since {_when(since)}: {_metrics(champion.get('metrics'))}</p>"
        )
    else:
        champion_html = "<p>No champion yet: the first run that passes the promotion policy sets one.</p>"

    models = _table(
        ["version", "kind", "key metrics", "created", "run", "artifact", "champion"],
        [
            [
                f"v{_e(m['version'])}", _e(m["kind"]), _metrics(m.get("metrics")),
                _when(m.get("created_at")), _run_link(m.get("run_id")),
                f"<code>{_e(m.get('artifact_uri'))}</code>",
                "&#9733;" if m.get("is_champion") else "",
            ]
            for m in reversed(snapshot["models"])
        ],
        "No model versions registered yet.",
    )
    history = _table(
        ["model", "kind", "valid from", "valid to", "reason", "actor"],
        [
            [
                f"v{_e(h['model_version'])}", _e(h["kind"]), _when(h["valid_from"]),
                _when(h["valid_to"]) if h["valid_to"] else "<em>current</em>",
                _e(h["reason"]), _e(h["actor"]),
            ]
            for h in reversed(snapshot["history"])
        ],
        "No champion history yet.",
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>textclf model registry</title>
<style>
  :root {{ color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }}
  body {{ margin: 1rem 1.5rem; }}
  table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
  th, td {{ border-bottom: 1px solid #8884; padding: .35rem .7rem; text-align: left; vertical-align: top; }}
  code {{ font-size: 12px; }}
  .champion {{ font-size: 1.1rem; }}
</style></head>
<body>
<h1>textclf model registry</h1>
<h2>Current champion</h2>
{champion_html}
<h2>Model versions</h2>
{models}
<h2>Champion history</h2>
{history}
<p><a href="registry.json">JSON</a></p>
</body></html>
"""


class TextclfRegistryPlugin(AirflowPlugin):
    name = "textclf_registry"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "textclf registry"}]
    external_views = [
        {
            "name": "Model registry",
            # Relative to the UI's base URL (no leading slash), so it works under a path prefix too.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "textclf-registry",  # set: rendered in an iframe at /plugin/textclf-registry
            "destination": "nav",
            "category": "browse",
        }
    ]
