"""Candidate kind ``pretrained``: an already fine-tuned checkpoint, evaluated as it is (only its
softmax temperature is fitted on the validation rows, tasks.calibration), its labels translated through ``label_map`` (``model.py``, which scores through ``bert/model.py``). Off unless enabled."""

from __future__ import annotations

from pathlib import Path

from tasks.candidates.base import CandidateKind, TextClassifier, TrainedModel, TrainingJob
from tasks.candidates.pretrained.config import PretrainedConfig
from tasks.errors import Skip

__all__ = ["KIND", "PretrainedConfig", "load", "train"]


def train(job: TrainingJob, config: PretrainedConfig) -> TrainedModel:
    from tasks.candidates.pretrained.model import PretrainedClassifier

    if not config.checkpoint:
        raise Skip("no pre-trained checkpoint configured ([pretrained] checkpoint)")
    model = PretrainedClassifier.from_checkpoint(config.checkpoint, config.label_map, job.labels, config.max_length)
    temperature = model.calibrate(job.validation["text"].tolist(), job.validation["label"].tolist())
    model.save(job.output_dir)
    return TrainedModel(
        params={"checkpoint": config.checkpoint, "label_map": model.label_map,
                "max_length": model.max_length},
        metrics={"temperature": temperature},
    )


def load(directory: Path) -> TextClassifier:
    from tasks.candidates.pretrained.model import PretrainedClassifier

    return PretrainedClassifier.load(directory)


KIND = CandidateKind(
    name="pretrained",
    description="A pre-trained checkpoint evaluated as-is (off unless enabled).",
    config_class=PretrainedConfig,
    train=train,
    load=load,
    enabled_by_default=False,
    learns_from_data=False,
)
