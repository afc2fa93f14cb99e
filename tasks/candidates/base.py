"""What a candidate kind is: the contract every plug-in under ``tasks/candidates/`` fulfils.

A kind module is light to import (the DAG file reads ``KINDS`` while it is parsed): it defines
a config dataclass, a ``train(job, config)`` and a ``load(directory)`` function, and one
``KIND = CandidateKind(...)`` that says how the pipeline runs it. Heavy libraries (scikit-learn,
torch) are imported inside ``train`` and ``load``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@runtime_checkable
class TextClassifier(Protocol):
    """What evaluation and prediction need from a model: columns of ``predict_proba``
    follow ``labels``."""

    labels: list[str]
    kind: str

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


MAX_TRAIN_ROWS = 100_000_000  # a bound on every row-count setting: a typo like 1e23 is an error


@dataclass(frozen=True)
class CandidateConfig:
    """Settings every kind has. ``max_train_rows`` keeps the newest rows of the training split
    (by ``labelled_at``, then id): the freshest signal, and the same rows on every rerun."""

    max_train_rows: int | None = None

    def __post_init__(self) -> None:
        if self.max_train_rows is not None and self.max_train_rows < 1:
            raise ValueError(f"max_train_rows must be at least 1, got {self.max_train_rows}")
        if self.max_train_rows is not None and self.max_train_rows > MAX_TRAIN_ROWS:
            raise ValueError(f"max_train_rows must be at most {MAX_TRAIN_ROWS:,}, got {self.max_train_rows}")


@dataclass
class TrainingJob:
    """One training: the frames carry ``id``, ``text``, ``label``, ``labelled_at``, ``weight``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    labels: list[str]
    output_dir: Path  # the artifact goes here (registered by the pipeline afterwards)
    checkpoint_dir: Path  # resumable state of a long training; deleted once registered
    progress: bool = False


@dataclass
class TrainedModel:
    """What a kind reports after training: the hyper-parameters really used (e.g. the batch
    size after an out-of-memory retry), validation metrics (``val_macro_f1`` at least)."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class CandidateKind:
    """A candidate kind as the pipeline and the DAG see it."""

    name: str
    description: str
    config_class: type[CandidateConfig]
    train: Callable[[TrainingJob, Any], TrainedModel]
    load: Callable[[Path], TextClassifier]
    queue: str = "default"  # Celery queue of its training task
    pool: str | None = None  # Airflow pool of its training task (e.g. one GPU)
    needs_gpu: bool = False  # asks the KubernetesExecutor for a GPU; runs on CPU without one
    enabled_by_default: bool = True  # in the default `candidates` list
    learns_from_data: bool = True  # False: evaluated as-is (left out of learning curves)
    execution_timeout: timedelta = timedelta(minutes=30)  # of one try of its training task
    retries: int = 2  # of its training task

    def __post_init__(self) -> None:
        if not issubclass(self.config_class, CandidateConfig):
            raise TypeError(f"{self.name}: config_class must subclass CandidateConfig")
