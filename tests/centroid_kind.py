"""A toy candidate kind, written the way the README's "Add your own candidate" section says:
nearest centroid over word counts, saved as JSON (a safe format)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.candidates.base import CandidateConfig, CandidateKind, TrainedModel, TrainingJob
from tasks.metrics import macro_f1_of_labels


@dataclass(frozen=True)
class CentroidConfig(CandidateConfig):
    temperature: float = 0.1  # softmax temperature over cosine similarities


class CentroidClassifier:
    kind = "centroid"

    def __init__(self, centroids: dict[str, dict[str, float]], labels: list[str], temperature: float):
        self.centroids, self.labels, self.temperature = centroids, labels, temperature

    def predict_proba(self, texts):
        scores = np.array([[_cosine(Counter(t.lower().split()), self.centroids.get(label, {}))
                            for label in self.labels] for t in texts]).reshape(len(texts), len(self.labels))
        exp = np.exp((scores - scores.max(axis=1, keepdims=True)) / self.temperature)
        return exp / exp.sum(axis=1, keepdims=True)


def _cosine(a, b) -> float:
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def train(job: TrainingJob, config: CentroidConfig) -> TrainedModel:
    centroids: dict[str, Counter] = {label: Counter() for label in job.labels}
    for text, label in zip(job.train["text"], job.train["label"], strict=True):
        centroids[label].update(text.lower().split())
    model = CentroidClassifier({k: dict(v) for k, v in centroids.items()}, job.labels, config.temperature)
    predicted = [job.labels[i] for i in model.predict_proba(list(job.validation["text"])).argmax(axis=1)]
    job.output_dir.mkdir(parents=True, exist_ok=True)
    (job.output_dir / "centroids.json").write_text(json.dumps(
        {"centroids": model.centroids, "labels": job.labels, "temperature": config.temperature}))
    return TrainedModel(params={"temperature": config.temperature},
                        metrics={"val_macro_f1": macro_f1_of_labels(job.validation["label"], predicted, job.labels)})


def load(directory: Path) -> CentroidClassifier:
    saved = json.loads((directory / "centroids.json").read_text())
    return CentroidClassifier(saved["centroids"], saved["labels"], saved["temperature"])


KIND = CandidateKind(name="centroid", description="Nearest word-count centroid (a toy).",
                     config_class=CentroidConfig, train=train, load=load)
