"""What only training needs: word counts per label become the centroids."""

from __future__ import annotations

from collections import Counter

from centroid.config import CentroidConfig
from centroid.model import CentroidClassifier
from tasks.candidates.base import TrainedModel, TrainingJob
from tasks.metrics import macro_f1_of_labels


def fit(job: TrainingJob, config: CentroidConfig) -> TrainedModel:
    centroids: dict[str, Counter] = {label: Counter() for label in job.labels}
    for text, label in zip(job.train["text"], job.train["label"], strict=True):
        centroids[label].update(text.lower().split())
    model = CentroidClassifier({k: dict(v) for k, v in centroids.items()}, job.labels, config.temperature)
    predicted = [job.labels[i] for i in model.predict_proba(list(job.validation["text"])).argmax(axis=1)]
    model.save(job.output_dir)
    return TrainedModel(params={"temperature": config.temperature},
                        metrics={"val_macro_f1": macro_f1_of_labels(job.validation["label"], predicted, job.labels)})
