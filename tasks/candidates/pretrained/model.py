"""Candidate kind "pretrained": an already fine-tuned text-classification checkpoint, evaluated as it is.

The checkpoint's own labels (config.id2label) are translated to ours through `label_map`. Several model labels
may map to one of ours (their probabilities add up). Model labels left out of the map are dropped: their
probability mass is discarded and each row is renormalised over the mapped labels, so the scores answer
"which of our labels, given that it is one of them". Our labels that no model label maps to get probability 0.
An empty `label_map` maps every model label that is also one of ours to itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.calibration import fit_temperature, label_targets, log_probabilities, temperature_scaled
from tasks.candidates.bert.model import load_classification_model, predict_model_probabilities
from tasks.candidates.bert.model import model_labels as labels_of

CANDIDATE_FILE_NAME = "pretrained_candidate.json"
BERT_POSITION_LIMIT = 512


class PretrainedClassifier:
    kind = "pretrained"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        checkpoint: str,
        label_map: dict[str, str],
        labels: list[str],
        max_length: int = BERT_POSITION_LIMIT,
        head_fraction: float = 0.25,
        temperature: float = 1.0,
    ) -> None:
        unknown_targets = sorted(set(label_map.values()) - set(labels))
        if unknown_targets:
            raise ValueError(f"label_map maps to labels outside {labels}: {unknown_targets}")
        self.checkpoint = checkpoint
        self.labels = list(labels)
        self.head_fraction = head_fraction
        self.calibration_temperature = temperature  # fitted on our validation rows by train()
        self._model, self._tokenizer = model, tokenizer
        self.max_length = min(max_length, self._tokenizer.model_max_length)
        model_labels = labels_of(self._model)
        unknown_sources = sorted(set(label_map) - set(model_labels))
        if unknown_sources:
            raise ValueError(f"label_map names labels the model does not have {model_labels}: {unknown_sources}")
        self.label_map = dict(label_map) or {label: label for label in model_labels if label in self.labels}
        if not self.label_map:
            raise ValueError(f"no label_map given and the model's labels {model_labels} share none with {labels}")
        # (model labels x our labels) 0/1 matrix: model probabilities @ mapping = our unnormalised scores
        self._mapping = np.zeros((len(model_labels), len(self.labels)))
        for row, model_label in enumerate(model_labels):
            if model_label in self.label_map:
                self._mapping[row, self.labels.index(self.label_map[model_label])] = 1.0

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        label_map: dict[str, str],
        labels: list[str],
        max_length: int = BERT_POSITION_LIMIT,
        head_fraction: float = 0.25,
        temperature: float = 1.0,
    ) -> PretrainedClassifier:
        """Load the checkpoint (safetensors only) and translate its labels through ``label_map``."""
        model, tokenizer = load_classification_model(checkpoint)
        return cls(model, tokenizer, checkpoint, label_map, labels, max_length, head_fraction, temperature)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities, one row per text summing to 1, columns in `self.labels` order (see the module doc),
        temperature-scaled: the mapped probabilities p become p ** (1 / T), renormalised."""
        return temperature_scaled(self.uncalibrated_proba(texts, batch_size), self.calibration_temperature)

    def uncalibrated_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        model_probabilities = predict_model_probabilities(
            self._model, self._tokenizer, texts, self.max_length, self.head_fraction, batch_size
        )
        mapped = model_probabilities @ self._mapping
        return mapped / mapped.sum(axis=1, keepdims=True)

    def calibrate(self, texts: Sequence[str], true_labels: Sequence[str]) -> float:
        """Fit the temperature on labelled rows (our validation split); returns it."""
        rows, targets = label_targets(list(true_labels), self.labels)
        scores = log_probabilities(self.uncalibrated_proba([texts[i] for i in rows]))
        self.calibration_temperature = fit_temperature(scores, targets)
        return self.calibration_temperature

    def save(self, directory: str | Path) -> Path:
        """Write the candidate's definition (not the weights: they stay at `checkpoint`) as a small JSON file."""
        checkpoint = Path(self.checkpoint)
        definition = {
            "kind": self.kind,
            "checkpoint": str(checkpoint.resolve()) if checkpoint.exists() else self.checkpoint,
            "label_map": self.label_map,
            "labels": self.labels,
            "max_length": self.max_length,
            "head_fraction": self.head_fraction,
            "temperature": self.calibration_temperature,
        }
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CANDIDATE_FILE_NAME
        path.write_text(json.dumps(definition, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PretrainedClassifier:
        definition = json.loads((Path(directory) / CANDIDATE_FILE_NAME).read_text())
        return cls.from_checkpoint(
            definition["checkpoint"],
            definition["label_map"],
            definition["labels"],
            definition["max_length"],
            definition["head_fraction"],
            definition.get("temperature", 1.0),  # saved before calibration: as it was
        )
