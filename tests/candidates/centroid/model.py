"""What scoring needs: the centroids, saved as JSON (a safe format), and cosine similarity."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

MODEL_FILE = "centroids.json"


class CentroidClassifier:
    kind = "centroid"

    def __init__(self, centroids: dict[str, dict[str, float]], labels: list[str], temperature: float):
        self.centroids, self.labels, self.temperature = centroids, labels, temperature

    def predict_proba(self, texts):
        scores = np.array([[_cosine(Counter(t.lower().split()), self.centroids.get(label, {}))
                            for label in self.labels] for t in texts]).reshape(len(texts), len(self.labels))
        exp = np.exp((scores - scores.max(axis=1, keepdims=True)) / self.temperature)
        return exp / exp.sum(axis=1, keepdims=True)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_text(json.dumps(
            {"centroids": self.centroids, "labels": self.labels, "temperature": self.temperature}))

    @classmethod
    def load(cls, directory: Path) -> CentroidClassifier:
        saved = json.loads((directory / MODEL_FILE).read_text())
        return cls(saved["centroids"], saved["labels"], saved["temperature"])


def _cosine(a, b) -> float:
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0
