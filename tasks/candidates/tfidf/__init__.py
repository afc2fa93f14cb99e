"""Candidate kind ``tfidf``: hashed word and character TF-IDF features, a linear SVM fitted
exactly by liblinear where the rows fit in memory and by SGD on streamed chunks beyond,
temperature-scaled probabilities; searched on the validation split, saved as safetensors + JSON
(``training.py``; scoring needs only ``model.py``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tasks.candidates.base import CandidateKind, TextClassifier, TrainedModel, TrainingJob
from tasks.candidates.tfidf.config import TfidfConfig

__all__ = ["KIND", "TfidfConfig", "load", "train"]


def train(job: TrainingJob, config: TfidfConfig) -> TrainedModel:
    from tasks.candidates.tfidf.training import train_tfidf

    model, result = train_tfidf(
        job.train["text"].tolist(), job.train["label"].tolist(),
        job.validation["text"].tolist(), job.validation["label"].tolist(), job.labels, config,
        train_weights=job.train["weight"].fillna(1.0).tolist(),
    )
    model.save(job.output_dir)
    return TrainedModel(
        params={**result.params, "search": asdict(config), "candidates_tried": result.candidates_tried},
        metrics={"val_macro_f1": result.val_macro_f1},
        peak_memory_bytes=None,
    )


def load(directory: Path) -> TextClassifier:
    from tasks.candidates.tfidf.model import TfidfClassifier

    return TfidfClassifier.load(directory)


KIND = CandidateKind(
    name="tfidf",
    description="TF-IDF + linear SVM baseline, tuned on the validation split.",
    config_class=TfidfConfig,
    train=train,
    load=load,
)
