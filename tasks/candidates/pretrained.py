"""Candidate kind ``pretrained``: an already fine-tuned checkpoint, evaluated as it is, its
labels translated through ``label_map`` (see ``tasks.pretrained``). Off unless enabled."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.candidates.base import CandidateConfig, CandidateKind, TextClassifier, TrainedModel, TrainingJob
from tasks.errors import Skip


@dataclass(frozen=True)
class PretrainedConfig(CandidateConfig):
    checkpoint: str = ""  # a local directory (or a hub id where the hub is reachable)
    label_map: dict[str, str] = field(default_factory=dict)  # model label -> our label
    max_length: int = 512


def train(job: TrainingJob, config: PretrainedConfig) -> TrainedModel:
    from tasks.pretrained import PretrainedClassifier

    if not config.checkpoint:
        raise Skip("no pre-trained checkpoint configured ([pretrained] checkpoint)")
    model = PretrainedClassifier(config.checkpoint, config.label_map, job.labels, config.max_length)
    model.save(job.output_dir)
    return TrainedModel(
        params={"checkpoint": config.checkpoint, "label_map": model.label_map,
                "max_length": model.max_length},
        metrics={},
    )


def load(directory: Path) -> TextClassifier:
    from tasks.pretrained import PretrainedClassifier

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
