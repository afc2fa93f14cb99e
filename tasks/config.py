"""Settings for every textclf entry point (CLI, DAG tasks, tests).

Sources, later ones winning: built-in defaults, a TOML file (``$TEXTCLF_CONFIG``, else
``$TEXTCLF_HOME/textclf.toml`` when it exists), then a few environment variables.
Identifiers that end up in SQL (schema, table and column names) are validated here, once,
and quoted with ``psycopg2.sql.Identifier`` wherever they are used.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SCHEMA = "textclf"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the setting."""


def validate_identifier(value: str, setting: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise ConfigError(
            f"{setting}={value!r} is not a valid SQL identifier "
            "(letters, digits and underscores, not starting with a digit, at most 63 characters)"
        )
    return value


@dataclass(frozen=True)
class SourceTable:
    """A table or view the pipeline reads; every name is validated on construction."""

    schema: str
    table: str
    id_column: str = "id"
    text_column: str = "text"
    timestamp_column: str = "labelled_at"
    label_column: str | None = "label"
    weight_column: str | None = None  # optional trust in each label, e.g. annotator confidence

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                validate_identifier(value, f"source.{f.name}")

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ValidationThresholds:
    max_text_length: int = 20_000
    min_new_rows: int = 1
    max_label_drift: float = 0.5
    max_conflict_share: float = 0.05
    max_duplicate_share: float = 0.2


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger may replace the champion (all rules must pass)."""

    macro_f1_floor: float = 0.5
    min_delta: float = 0.0
    max_class_regression: float = 0.05
    bootstrap_resamples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    labelled_source: SourceTable = field(
        default_factory=lambda: SourceTable(SCHEMA, "labelled_texts", weight_column="weight")
    )
    documents_source: SourceTable = field(
        default_factory=lambda: SourceTable(
            SCHEMA, "documents", timestamp_column="created_at", label_column=None
        )
    )
    labels: tuple[str, ...] | None = None
    allow_new_labels: bool = False
    snapshot_window_days: int | None = None
    validation: ValidationThresholds = field(default_factory=ValidationThresholds)
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)
    candidates: tuple[str, ...] = ("tfidf", "bert")
    tfidf: dict[str, Any] = field(default_factory=dict)
    bert: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] = field(default_factory=dict)
    prediction_chunk_rows: int = 5_000
    rescore_on_champion_change: bool = True
    artifact_root: str | None = None  # default $TEXTCLF_HOME/models; any fsspec URI works

    @property
    def expectations_dir(self) -> Path:
        return Path(os.environ.get("TEXTCLF_EXPECTATIONS_DIR", REPO_ROOT / "expectations"))

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def run_dir(self, run_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
        return self.runs_dir / safe


def _source_from(raw: dict[str, Any], default: SourceTable, setting: str) -> SourceTable:
    unknown = set(raw) - {f.name for f in fields(SourceTable)}
    if unknown:
        raise ConfigError(f"unknown keys in [{setting}]: {sorted(unknown)}")
    return replace(default, **raw)


def _dataclass_from(cls, raw: dict[str, Any], setting: str):
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown keys in [{setting}]: {sorted(unknown)}")
    return cls(**raw)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from defaults, the TOML file and the environment."""
    home = Path(os.environ.get("TEXTCLF_HOME", ".textclf")).resolve()
    config_path = os.environ.get("TEXTCLF_CONFIG") or home / "textclf.toml"
    raw: dict[str, Any] = {}
    if Path(config_path).is_file():
        with open(config_path, "rb") as fh:
            raw = tomllib.load(fh)
    elif os.environ.get("TEXTCLF_CONFIG"):
        raise ConfigError(f"TEXTCLF_CONFIG={config_path} does not exist")

    base = Settings(home=home)
    values: dict[str, Any] = {"home": home}
    if "labelled_source" in raw:
        values["labelled_source"] = _source_from(
            raw.pop("labelled_source"), base.labelled_source, "labelled_source"
        )
    if "documents_source" in raw:
        values["documents_source"] = _source_from(
            raw.pop("documents_source"), base.documents_source, "documents_source"
        )
    if "validation" in raw:
        values["validation"] = _dataclass_from(
            ValidationThresholds, raw.pop("validation"), "validation"
        )
    if "promotion" in raw:
        values["promotion"] = _dataclass_from(PromotionPolicy, raw.pop("promotion"), "promotion")
    for key in ("labels", "candidates"):
        if key in raw:
            values[key] = tuple(raw.pop(key))
    known = {f.name for f in fields(Settings)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown settings in {config_path}: {sorted(unknown)}")
    values.update(raw)

    if os.environ.get("TEXTCLF_DATABASE_URL"):
        values["database_url"] = os.environ["TEXTCLF_DATABASE_URL"]
    if os.environ.get("TEXTCLF_LABELS"):
        values["labels"] = tuple(
            label.strip() for label in os.environ["TEXTCLF_LABELS"].split(",") if label.strip()
        )
    values.update(overrides)
    settings = Settings(**values)
    unknown_candidates = set(settings.candidates) - {"tfidf", "bert", "pretrained"}
    if unknown_candidates:
        raise ConfigError(f"candidates: unknown kinds {sorted(unknown_candidates)}")
    return settings
