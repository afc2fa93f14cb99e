"""Telling Airflow about champion changes made outside a DAG run (`textclf promote`,
`textclf rollback`): an event on the `textclf_champion` asset through Airflow's REST API, so that
DAGs scheduled on the asset run as they do after a nightly promotion.

Where Airflow is: textclf.toml's `[airflow]` table (api_url, username, password_file), else the
local `textclf airflow` (http://127.0.0.1:8080, admin, the password file it keeps under
$TEXTCLF_HOME/airflow). TEXTCLF_AIRFLOW_PASSWORD overrides the password file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.config import Settings
from tasks.errors import AirflowUnreachable

CHAMPION_ASSET = "textclf_champion"
CHAMPION_ASSET_URI = "textclf://registry/champion"


def _credentials(settings: Settings) -> tuple[str, str, str]:
    api = settings.airflow
    password = os.environ.get("TEXTCLF_AIRFLOW_PASSWORD")
    if password is None:
        path = Path(api.password_file) if api.password_file else settings.home / "airflow" / \
            "simple_auth_manager_passwords.json"
        if not path.is_file():
            raise AirflowUnreachable(f"no password for Airflow user {api.username!r}: set [airflow] "
                                     "password_file or TEXTCLF_AIRFLOW_PASSWORD")
        password = json.loads(path.read_text()).get(api.username)
        if not password:
            raise AirflowUnreachable(f"{path} has no password for Airflow user {api.username!r}")
    return api.api_url.rstrip("/"), api.username, password


class ChampionAsset:
    """A logged-in client for the champion asset, opened before the champion changes so that an
    unreachable Airflow stops the change instead of leaving Airflow untold."""

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        import httpx

        self.url, username, password = _credentials(settings)
        self._client = httpx.Client(base_url=self.url, timeout=timeout)
        try:
            token = self._client.post("/auth/token", json={"username": username, "password": password})
            if token.status_code != 201:
                raise AirflowUnreachable(f"{self.url} refused the login of {username!r} ({token.status_code})")
            self._headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            assets = self._client.get("/api/v2/assets", params={"uri_pattern": CHAMPION_ASSET_URI},
                                      headers=self._headers)
            assets.raise_for_status()
            matches = [a for a in assets.json()["assets"] if a["uri"] == CHAMPION_ASSET_URI]
            if not matches:
                raise AirflowUnreachable(f"{self.url} does not know the asset {CHAMPION_ASSET_URI} (is "
                                         "the textclf_retrain DAG deployed there?)")
            self.asset_id = matches[0]["id"]
        except httpx.HTTPError as exc:
            self._client.close()
            raise AirflowUnreachable(f"{self.url}: {exc}") from exc
        except AirflowUnreachable:
            self._client.close()
            raise

    def emit(self, extra: dict[str, Any]) -> int:
        """Post an event on the champion asset; returns the event's id."""
        import httpx

        try:
            event = self._client.post("/api/v2/assets/events", headers=self._headers,
                                      json={"asset_id": self.asset_id, "extra": extra})
            event.raise_for_status()
            return int(event.json()["id"])
        except httpx.HTTPError as exc:
            raise AirflowUnreachable(f"{self.url}: {exc}") from exc
        finally:
            self._client.close()


def emit_champion_event(settings: Settings, extra: dict[str, Any], timeout: float = 15.0) -> int:
    """Post an event on the champion asset; returns the event's id."""
    return ChampionAsset(settings, timeout).emit(extra)
