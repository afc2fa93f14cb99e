"""The textclf model registry in the Airflow UI: a page under Browse (rendered in an iframe) and
JSON endpoints, served by a FastAPI app the api-server mounts at /textclf.

The app lives in textclf_registry_app.py and is imported only when the api-server asks for
`fastapi_apps`: schedulers, dag-processors and task processes load plugins too, and the API's
security module costs them a second of imports for nothing.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/textclf"


class TextclfRegistryPlugin(AirflowPlugin):
    name = "textclf_registry"
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

    @property  # type: ignore[override]
    def fastapi_apps(self) -> list[dict]:
        from textclf_registry_app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "textclf registry"}]
