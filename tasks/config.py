"""Settings for every textclf entry point (CLI, DAG tasks, tests).

Sources, later ones winning: built-in defaults, a TOML file (``$TEXTCLF_CONFIG``, else
``$TEXTCLF_HOME/textclf.toml`` when it exists), then a few environment variables. Every value
is type-checked when the file is read, so a typo fails at load time with the key's name, not
in the middle of a night. Identifiers that end up in SQL (schema, table and column names) are
validated here, once, and quoted with ``psycopg2.sql.Identifier`` wherever they are used.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasks.candidates import KINDS, default_candidates
from tasks.candidates.base import CandidateConfig
from tasks.errors import ConfigError
from tasks.normalize import normalize_labels
from tasks.typed import coerce, from_mapping

if TYPE_CHECKING:
    from upath import UPath

__all__ = ["ConfigError", "Settings", "SourceTable", "SplitOptions", "load_settings"]

REPO_ROOT = Path(__file__).resolve().parents[1]
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SCHEMA = "textclf"


def safe_name(run_id: str) -> str:
    """A run id as a file or folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def validate_identifier(value: str, setting: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise ConfigError(
            f"{setting} = {value!r} is not a valid SQL identifier "
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
    """The [validation] table. ``max_label_drift`` is KL(new || baseline) in nats. Sampling noise
    alone is about (classes - 1) / (2 * new rows), so small batches over many classes need a
    looser bound; for scale, 50/50 -> 80/20 is 0.19 and 50/50 -> 95/5 is 0.49."""

    max_text_length: int = 20_000
    min_new_rows: int = 1
    max_label_drift: float = 0.5
    max_conflict_share: float = 0.05
    max_duplicate_share: float = 0.2


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger may replace the champion (all rules must pass; see tasks.policy)."""

    macro_f1_floor: float = 0.5
    min_delta: float = 0.0  # the challenger must be better than the champion by more than this
    max_class_regression: float = 0.05  # veto when a class's F1 drops (significantly) by more than this
    alpha: float = 0.05  # chance of any spurious promotion over lifetime_nights nights of one champion
    lifetime_nights: int = 365  # the window of a champion's reign over which alpha is spent
    min_class_support: int = 30  # classes with fewer test rows are not judged for regression
    bootstrap_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.bootstrap_resamples < 100:
            raise ValueError(f"bootstrap_resamples must be at least 100, got {self.bootstrap_resamples}")
        if self.lifetime_nights < 1:
            raise ValueError(f"lifetime_nights must be at least 1, got {self.lifetime_nights}")
        if self.min_class_support < 0 or self.max_class_regression < 0:
            raise ValueError("min_class_support and max_class_regression must not be negative")


@dataclass(frozen=True)
class RetentionPolicy:
    """What `textclf gc` and the textclf_maintenance DAG keep (see tasks.retention)."""

    keep_candidates: int = 10  # newest model versions kept whatever they are; champions always
    max_age_days: int = 30  # run folders, checkpoints and scratch older than this go
    # Versions younger than this are kept whatever keep_candidates says: a night in flight may
    # still promote them (longer than textclf_retrain's 20-hour timeout).
    grace_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.keep_candidates < 0 or self.max_age_days < 1 or self.grace_hours < 0:
            raise ValueError("keep_candidates must be >= 0, max_age_days >= 1 and grace_hours >= 0")


@dataclass(frozen=True)
class AirflowApi:
    """Where `textclf promote` and `textclf rollback` tell Airflow that the champion changed."""

    api_url: str = "http://127.0.0.1:8080"
    username: str = "admin"
    password_file: str | None = None  # JSON {user: password}; default: the local `textclf airflow`'s


@dataclass(frozen=True)
class SplitOptions:
    """The [split] table: what the split key ignores besides Unicode form, case and spacing, so
    that near-duplicates (a retweet, the same text with another link) share a split. All off is
    the former scheme (normalised-text-sha256-v2); changing any option moves rows between splits
    (see tasks.extract and the README)."""

    remove_retweet_marker: bool = True  # a leading "RT @user:"
    remove_urls: bool = True  # http(s)://... and www....
    remove_mentions: bool = True  # @user anywhere
    remove_punctuation: bool = True  # Unicode punctuation (categories P*), read as a space


SOURCE_NAMES = {f.name for f in fields(SourceTable)}  # every field is a SQL identifier
DEFAULT_LABELLED_SOURCE = SourceTable(SCHEMA, "labelled_texts", weight_column="weight")
DEFAULT_DOCUMENTS_SOURCE = SourceTable(
    SCHEMA, "documents", timestamp_column="created_at", label_column=None
)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    labelled_source: SourceTable = DEFAULT_LABELLED_SOURCE
    documents_source: SourceTable = DEFAULT_DOCUMENTS_SOURCE
    labels: tuple[str, ...] | None = None
    allow_new_labels: bool = False
    # Labels are compared after NFKC, trimming and (unless this is off) case folding.
    label_case_fold: bool = True
    # While the label set is learned from the first snapshot, a label on fewer rows is not
    # admitted (its rows are quarantined, naming the label): one stray row must not make a class.
    min_label_rows: int = 30
    # The zone of naive `timestamp without time zone` source columns (an IANA name).
    source_timezone: str = "UTC"
    snapshot_window_days: int | None = None
    split: SplitOptions = field(default_factory=SplitOptions)
    validation: ValidationThresholds = field(default_factory=ValidationThresholds)
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    airflow: AirflowApi = field(default_factory=AirflowApi)
    candidates: tuple[str, ...] = field(default_factory=default_candidates)
    # One typed config per candidate kind, from the [<kind>] tables; defaults where absent.
    candidate_configs: dict[str, CandidateConfig] = field(default_factory=dict)
    prediction_chunk_rows: int = 5_000  # documents scored and written per transaction
    prediction_partition_rows: int = 250_000  # documents per mapped scoring task, about
    max_prediction_partitions: int = 16
    rescore_on_champion_change: bool = True
    artifact_root: str | None = None  # default $TEXTCLF_HOME/models; any fsspec URI works
    # Run data every task hands to the next (snapshots, evaluations, reports): default
    # $TEXTCLF_HOME/runs; with workers on several hosts, a URI they all reach (s3://..., a mount).
    run_root: str | None = None
    # Inside Airflow: the connection (aws, google_cloud_platform, wasb) whose credentials open
    # run_root and artifact_root; unset = the store's standard environment (AWS_* ...).
    storage_conn_id: str | None = None
    # Local roots under a distributed executor are refused unless every worker mounts them.
    shared_filesystem: bool = False
    # A worker of the gpu queue without CUDA refuses GPU work unless this is set.
    allow_cpu_fallback: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.candidates if name not in KINDS]
        if unknown:
            raise ConfigError(
                f"candidates: unknown kind{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"known kinds: {', '.join(KINDS)}"
            )
        if not self.candidates:
            raise ConfigError("candidates: name at least one candidate kind")
        if self.min_label_rows < 1:
            raise ConfigError(f"min_label_rows must be at least 1, got {self.min_label_rows}")
        try:
            ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"source_timezone: {self.source_timezone!r} is not a time zone name "
                              "(e.g. 'UTC', 'Europe/Paris')") from None
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(normalize_labels(self.labels, self.label_case_fold)))

    def candidate_config(self, kind: str) -> CandidateConfig:
        config = self.candidate_configs.get(kind)
        return config if config is not None else KINDS[kind].config_class()

    @property
    def expectations_dir(self) -> Path:
        return Path(os.environ.get("TEXTCLF_EXPECTATIONS_DIR", REPO_ROOT / "expectations"))

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def run_dir(self, run_id: str) -> UPath:
        """Where this run's data lives (shared storage; see tasks.storage)."""
        from upath import UPath

        return UPath(self.run_root or self.home / "runs") / safe_name(run_id)

    def scratch_dir(self, run_id: str) -> Path:
        """Worker-local room for what one task writes for itself (never handed on)."""
        return self.home / "scratch" / safe_name(run_id)


# Top-level keys of textclf.toml that are plain values (tables are handled one by one below).
_PLAIN_KEYS = (
    "labels", "allow_new_labels", "label_case_fold", "min_label_rows", "source_timezone",
    "snapshot_window_days", "candidates", "prediction_chunk_rows",
    "prediction_partition_rows", "max_prediction_partitions",
    "rescore_on_champion_change", "artifact_root", "run_root", "storage_conn_id",
    "shared_filesystem", "allow_cpu_fallback",
)


def _source(raw: Any, default: SourceTable, setting: str) -> SourceTable:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{setting}] must be a table of settings")
    if default == DEFAULT_LABELLED_SOURCE:
        # A table of your own has no weight column unless it names one.
        default = replace(default, weight_column=None)
    for name, value in raw.items():  # named as the file names them, before anything else
        if name in SOURCE_NAMES and value is not None:
            validate_identifier(value, f"[{setting}] {name}")
    base = {f.name: getattr(default, f.name) for f in fields(SourceTable)}
    return from_mapping(SourceTable, {**base, **raw}, setting)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def settings_from_mapping(raw: dict[str, Any], home: Path, origin: str = "textclf.toml") -> Settings:
    """Settings from a parsed textclf.toml; every key and type is checked."""
    raw = dict(raw)
    hints = {"labels": tuple[str, ...] | None, "allow_new_labels": bool, "label_case_fold": bool,
             "min_label_rows": int, "source_timezone": str,
             "snapshot_window_days": int | None, "candidates": tuple[str, ...],
             "prediction_chunk_rows": int, "rescore_on_champion_change": bool,
             "prediction_partition_rows": int, "max_prediction_partitions": int,
             "artifact_root": str | None, "run_root": str | None, "storage_conn_id": str | None,
             "shared_filesystem": bool, "allow_cpu_fallback": bool}
    values: dict[str, Any] = {"home": home}
    for key in _PLAIN_KEYS:
        if key in raw:
            values[key] = coerce(raw.pop(key), hints[key], key)
    if "labelled_source" in raw:
        values["labelled_source"] = _source(raw.pop("labelled_source"), DEFAULT_LABELLED_SOURCE,
                                            "labelled_source")
    if "documents_source" in raw:
        values["documents_source"] = _source(raw.pop("documents_source"), DEFAULT_DOCUMENTS_SOURCE,
                                             "documents_source")
    if "split" in raw:
        values["split"] = from_mapping(SplitOptions, raw.pop("split"), "split")
    if "validation" in raw:
        values["validation"] = from_mapping(ValidationThresholds, raw.pop("validation"), "validation")
    if "promotion" in raw:
        values["promotion"] = from_mapping(PromotionPolicy, raw.pop("promotion"), "promotion")
    if "retention" in raw:
        values["retention"] = from_mapping(RetentionPolicy, raw.pop("retention"), "retention")
    if "airflow" in raw:
        values["airflow"] = from_mapping(AirflowApi, raw.pop("airflow"), "airflow")
    configs = {}
    for name, kind in KINDS.items():
        if name in raw:
            configs[name] = from_mapping(kind.config_class, raw.pop(name), name)
    values["candidate_configs"] = configs
    if raw:
        known = [*_PLAIN_KEYS, "labelled_source", "documents_source", "split", "validation", "promotion",
                 "retention", "airflow", *KINDS]
        raise ConfigError(
            f"unknown setting{'s' if len(raw) > 1 else ''} in {origin}: {', '.join(sorted(raw))} "
            f"(known: {', '.join(known)})"
        )
    return Settings(**values)


def config_path(home: Path) -> Path | None:
    """The configuration file in use: $TEXTCLF_CONFIG (which must exist), else
    $TEXTCLF_HOME/textclf.toml if present."""
    explicit = os.environ.get("TEXTCLF_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"TEXTCLF_CONFIG={explicit} does not exist")
        return Path(explicit)
    default = home / "textclf.toml"
    return default if default.is_file() else None


def _env_flag(variable: str) -> bool:
    value = os.environ[variable].strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"{variable}={os.environ[variable]!r}: expected 1/true/yes or 0/false/no")
    return value in ("1", "true", "yes")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from defaults, the TOML file and the environment."""
    home = Path(overrides.pop("home", None) or os.environ.get("TEXTCLF_HOME", ".textclf")).resolve()
    path = config_path(home)
    settings = settings_from_mapping(read_config_file(path), home, str(path)) if path else Settings(home=home)
    changes: dict[str, Any] = {}
    if os.environ.get("TEXTCLF_DATABASE_URL"):
        changes["database_url"] = os.environ["TEXTCLF_DATABASE_URL"]
    for variable, key in (("TEXTCLF_ARTIFACT_ROOT", "artifact_root"), ("TEXTCLF_RUN_ROOT", "run_root")):
        if os.environ.get(variable):
            changes[key] = os.environ[variable]
    for variable, key in (("TEXTCLF_SHARED_FILESYSTEM", "shared_filesystem"),
                          ("TEXTCLF_ALLOW_CPU_FALLBACK", "allow_cpu_fallback")):
        if os.environ.get(variable):
            changes[key] = _env_flag(variable)
    if os.environ.get("TEXTCLF_AIRFLOW_API_URL"):  # e.g. http://airflow-apiserver:8080 in compose
        changes["airflow"] = replace(settings.airflow, api_url=os.environ["TEXTCLF_AIRFLOW_API_URL"])
    if os.environ.get("TEXTCLF_LABELS"):
        changes["labels"] = tuple(
            label.strip() for label in os.environ["TEXTCLF_LABELS"].split(",") if label.strip()
        )
    changes.update(overrides)
    return replace(settings, **changes)
