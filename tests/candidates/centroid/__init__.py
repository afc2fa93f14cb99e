"""A toy candidate kind, written the way the README's "Add your own candidate" section says:
one folder, an ``__init__`` light to import (KIND, train, load), ``config.py``, ``model.py``
(scoring) and ``training.py`` (training only). Nearest centroid over word counts."""

from __future__ import annotations

from pathlib import Path

from centroid.config import CentroidConfig
from tasks.candidates.base import CandidateKind, TextClassifier, TrainedModel, TrainingJob

__all__ = ["KIND", "CentroidConfig", "load", "train"]


def train(job: TrainingJob, config: CentroidConfig) -> TrainedModel:
    from centroid.training import fit

    return fit(job, config)


def load(directory: Path) -> TextClassifier:
    from centroid.model import CentroidClassifier

    return CentroidClassifier.load(directory)


KIND = CandidateKind(name="centroid", description="Nearest word-count centroid (a toy).",
                     config_class=CentroidConfig, train=train, load=load)
